//! Coded concepts (code value, scheme, meaning) that describe what a segment is, and the SNOMED CT / DCM
//! codes segnode's segmenters use. Kept beside the segmenters because they decide what they found; the
//! result writers only copy them into the objects they build.

/// A code from a coding scheme, as in a DICOM Code Sequence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodedConcept {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

impl CodedConcept {
    pub const fn new(value: &'static str, scheme: &'static str, meaning: &'static str) -> Self {
        CodedConcept {
            value,
            scheme,
            meaning,
        }
    }
}

/// Segmented property category "Anatomical Structure" (SCT 91723000, CID 7150).
pub const ANATOMICAL_STRUCTURE: CodedConcept =
    CodedConcept::new("91723000", "SCT", "Anatomical Structure");
/// Segmented property category "Physical object" (SCT 260787004), e.g. implanted devices.
pub const PHYSICAL_OBJECT: CodedConcept = CodedConcept::new("260787004", "SCT", "Physical object");
/// Segmented property category "Morphologically Altered Structure" (SCT 49755003, CID 7150): lesions,
/// effusions.
pub const MORPHOLOGICALLY_ALTERED_STRUCTURE: CodedConcept =
    CodedConcept::new("49755003", "SCT", "Morphologically Altered Structure");
/// Segmented property type "Pleural effusion" (SCT 60046008).
pub const PLEURAL_EFFUSION: CodedConcept = CodedConcept::new("60046008", "SCT", "Pleural effusion");
/// Segmented property type "Lung" (SCT 39607008).
pub const LUNG: CodedConcept = CodedConcept::new("39607008", "SCT", "Lung");
/// Laterality modifier "Left" (SCT 7771000).
pub const LEFT: CodedConcept = CodedConcept::new("7771000", "SCT", "Left");
/// Laterality modifier "Right" (SCT 24028007).
pub const RIGHT: CodedConcept = CodedConcept::new("24028007", "SCT", "Right");
/// Algorithm family "Morphological Operations" (DCM 123104, CID 7162).
pub const MORPHOLOGICAL_OPERATIONS: CodedConcept =
    CodedConcept::new("123104", "DCM", "Morphological Operations");
/// Algorithm family "Artificial Intelligence" (DCM 123110, CID 7162).
pub const ARTIFICIAL_INTELLIGENCE: CodedConcept =
    CodedConcept::new("123110", "DCM", "Artificial Intelligence");

/// Coded concepts hold `&'static str`; codes coming from a site's model (external or ONNX) are interned once each (a site's model
/// emits a handful of distinct codes, so this stays small for the life of the process).
pub fn intern(s: &str) -> &'static str {
    static POOL: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = pool.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    pool.insert(leaked);
    leaked
}
