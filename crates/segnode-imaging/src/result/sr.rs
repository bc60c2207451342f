//! The measurement report (`sr`): Comprehensive 3D SR following TID 1500 "Measurement Report".
//!
//! One measurement group (TID 1411, volumetric ROI) per segment: tracking identifier and UID, the SEG
//! segment it measures (IMAGE, Referenced Segment), the source series, the finding and its site with
//! laterality, then the measurements: volume (SCT 118565006, mL), mean attenuation (DCM 112031 with
//! derivation Mean, `[hnsf'U]`), LAA-950 (%), contact count, insertion angle, array length; an array's
//! contact positions are SCOORD3D points in the source's Frame of Reference. Measurements without a
//! standard code carry segnode's local coding scheme (`99SEGNODE`). The evidence lists the source series
//! and the SEG; the image library lists the source slices.

use super::dataset::{code_item, ds, item, put_seq, put_str, Obj};
use super::header::{put_common, source_slice_ref, with_meta, NewObject, Stamp};
use super::object::{FormInput, ResultError, ResultObject};
use super::uid::new_uid;
use crate::segment::codes::CodedConcept;
use crate::segment::{Measurement, Segment};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use serde_json::json;

const C: fn(&'static str, &'static str, &'static str) -> CodedConcept = CodedConcept::new;

/// A measurement's code and its UCUM unit (value, meaning).
struct Quantity {
    concept: CodedConcept,
    unit: (&'static str, &'static str),
    derivation: Option<CodedConcept>,
}

/// How a segnode measurement is coded in the report; `None`: left out.
fn quantity(m: &Measurement) -> Option<Quantity> {
    let q = |concept, unit, derivation| {
        Some(Quantity {
            concept,
            unit,
            derivation,
        })
    };
    match m.name {
        "volume" => q(C("118565006", "SCT", "Volume"), ("ml", "milliliter"), None),
        "mean_density" => q(
            C("112031", "DCM", "Attenuation Coefficient"),
            ("[hnsf'U]", "Hounsfield unit"),
            Some(C("373098007", "SCT", "Mean")),
        ),
        "laa950" => q(
            C("LAA950", "99SEGNODE", "Low attenuation area below -950 HU"),
            ("%", "Percent"),
            None,
        ),
        "contacts" => q(
            C("CONTACTS", "99SEGNODE", "Number of electrode contacts"),
            ("{contacts}", "contacts"),
            None,
        ),
        "insertion_angle" => q(
            C("INSANGLE", "99SEGNODE", "Angular insertion depth"),
            ("deg", "degree"),
            None,
        ),
        "array_length" => q(C("410668003", "SCT", "Length"), ("mm", "millimeter"), None),
        _ => None,
    }
}

fn concept_name(o: &mut Obj, c: &CodedConcept) {
    put_seq(o, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(c)]);
}

/// A content item with relationship `rel` and value type `vt`.
fn content(rel: &str, vt: &str, name: &CodedConcept, fill: impl FnOnce(&mut Obj)) -> Obj {
    item(|o| {
        put_str(o, tags::RELATIONSHIP_TYPE, VR::CS, rel);
        put_str(o, tags::VALUE_TYPE, VR::CS, vt);
        concept_name(o, name);
        fill(o);
    })
}

fn code(rel: &str, name: &CodedConcept, value: &CodedConcept) -> Obj {
    content(rel, "CODE", name, |o| {
        put_seq(o, tags::CONCEPT_CODE_SEQUENCE, vec![code_item(value)])
    })
}

fn text(rel: &str, name: &CodedConcept, value: &str) -> Obj {
    content(rel, "TEXT", name, |o| {
        put_str(o, tags::TEXT_VALUE, VR::UT, value)
    })
}

fn uidref(rel: &str, name: &CodedConcept, value: &str) -> Obj {
    content(rel, "UIDREF", name, |o| {
        put_str(o, tags::UID, VR::UI, value)
    })
}

fn container(rel: &str, name: &CodedConcept, children: Vec<Obj>) -> Obj {
    content(rel, "CONTAINER", name, |o| {
        put_str(o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
        put_seq(o, tags::CONTENT_SEQUENCE, children);
    })
}

fn num(m: &Measurement, q: &Quantity) -> Obj {
    content("CONTAINS", "NUM", &q.concept, |o| {
        put_seq(
            o,
            tags::MEASURED_VALUE_SEQUENCE,
            vec![item(|v| {
                put_seq(
                    v,
                    tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                    vec![code_item(&CodedConcept::new(q.unit.0, "UCUM", q.unit.1))],
                );
                put_str(v, tags::NUMERIC_VALUE, VR::DS, &ds(m.value));
            })],
        );
        if let Some(d) = &q.derivation {
            put_seq(
                o,
                tags::CONTENT_SEQUENCE,
                vec![code(
                    "HAS CONCEPT MOD",
                    &C("121401", "DCM", "Derivation"),
                    d,
                )],
            );
        }
    })
}

fn measurement_group(s: &Segment, input: &FormInput, seg_uid: Option<&str>) -> Obj {
    let info = &input.volume.series;
    let d = &s.description;
    let mut items = vec![
        text(
            "HAS OBS CONTEXT",
            &C("112039", "DCM", "Tracking Identifier"),
            &d.label,
        ),
        uidref(
            "HAS OBS CONTEXT",
            &C("112040", "DCM", "Tracking Unique Identifier"),
            &new_uid(),
        ),
    ];
    if let Some(seg_uid) = seg_uid {
        items.push(content(
            "CONTAINS",
            "IMAGE",
            &C("121191", "DCM", "Referenced Segment"),
            |o| {
                put_seq(
                    o,
                    tags::REFERENCED_SOP_SEQUENCE,
                    vec![item(|r| {
                        put_str(
                            r,
                            tags::REFERENCED_SOP_CLASS_UID,
                            VR::UI,
                            uids::SEGMENTATION_STORAGE,
                        );
                        put_str(r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, seg_uid);
                        r.put(DataElement::new(
                            tags::REFERENCED_SEGMENT_NUMBER,
                            VR::US,
                            PrimitiveValue::from(s.number as u16),
                        ));
                    })],
                );
            },
        ));
    }
    items.push(uidref(
        "CONTAINS",
        &C("121232", "DCM", "Source series for segmentation"),
        &info.series_instance_uid,
    ));
    items.push(code(
        "CONTAINS",
        &C("121071", "DCM", "Finding"),
        &d.property_type,
    ));
    let mut site = code(
        "HAS CONCEPT MOD",
        &C("363698007", "SCT", "Finding Site"),
        &d.property_type,
    );
    if let Some(m) = &d.modifier {
        put_seq(
            &mut site,
            tags::CONTENT_SEQUENCE,
            vec![code(
                "HAS CONCEPT MOD",
                &C("272741003", "SCT", "Laterality"),
                m,
            )],
        );
    }
    items.push(site);
    for m in &s.measurements {
        if let Some(q) = quantity(m) {
            items.push(num(m, &q));
        }
    }
    for p in &s.points {
        items.push(content(
            "CONTAINS",
            "SCOORD3D",
            &C("CONTACT", "99SEGNODE", "Electrode contact position"),
            |o| {
                put_str(o, tags::GRAPHIC_TYPE, VR::CS, "POINT");
                o.put(DataElement::new(
                    tags::GRAPHIC_DATA,
                    VR::FL,
                    PrimitiveValue::from(p.map(|c| c as f32)),
                ));
                put_str(
                    o,
                    tags::REFERENCED_FRAME_OF_REFERENCE_UID,
                    VR::UI,
                    &info.frame_of_reference_uid,
                );
            },
        ));
    }
    container("CONTAINS", &C("125007", "DCM", "Measurement Group"), items)
}

/// Build the report.
pub fn build(input: &FormInput) -> Result<Vec<ResultObject>, ResultError> {
    let (volume, seg, opts) = (input.volume, input.seg, input.opts);
    let err = |reason: String| ResultError::Build { form: "sr", reason };
    if seg.segments.is_empty() {
        return Err(err(
            "nothing to report: the segmentation has no segments".into()
        ));
    }
    let info = &volume.series;
    let seg_uid = input.seg_ref.map(|r| r.sop_instance_uid.as_str());
    let sop_instance_uid = new_uid();
    let series_instance_uid = new_uid();
    let at = Stamp::now();
    let mut o = Obj::new_empty();
    put_common(
        &mut o,
        info,
        &NewObject {
            sop_class_uid: uids::COMPREHENSIVE3_DSR_STORAGE,
            sop_instance_uid: &sop_instance_uid,
            series_instance_uid: &series_instance_uid,
            modality: "SR",
        },
        opts,
        &at,
    );
    o.remove_element(tags::FRAME_OF_REFERENCE_UID);
    o.remove_element(tags::POSITION_REFERENCE_INDICATOR);
    // SR Document Series
    put_seq(
        &mut o,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    );
    // SR Document General
    put_str(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &opts.instance_number.to_string(),
    );
    put_str(&mut o, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, &at.date);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, &at.time);
    put_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
    let mut evidence_series = vec![item(|s| {
        put_str(
            s,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &info.series_instance_uid,
        );
        let mut seen = std::collections::HashSet::new();
        put_seq(
            s,
            tags::REFERENCED_SOP_SEQUENCE,
            volume
                .slices
                .iter()
                .filter(|sl| seen.insert(sl.sop_instance_uid.as_str()))
                .map(|sl| {
                    item(|r| {
                        put_str(r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &sl.sop_class_uid);
                        put_str(
                            r,
                            tags::REFERENCED_SOP_INSTANCE_UID,
                            VR::UI,
                            &sl.sop_instance_uid,
                        );
                    })
                })
                .collect(),
        );
    })];
    if let Some(r) = input.seg_ref {
        evidence_series.push(item(|s| {
            put_str(s, tags::SERIES_INSTANCE_UID, VR::UI, &r.series_instance_uid);
            put_seq(
                s,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![item(|x| {
                    put_str(
                        x,
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        uids::SEGMENTATION_STORAGE,
                    );
                    put_str(
                        x,
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        &r.sop_instance_uid,
                    );
                })],
            );
        }));
    }
    put_seq(
        &mut o,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![item(|st| {
            put_str(
                st,
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                &info.study_instance_uid,
            );
            put_seq(st, tags::REFERENCED_SERIES_SEQUENCE, evidence_series);
        })],
    );
    // SR Document Content: TID 1500
    put_str(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    concept_name(&mut o, &C("126000", "DCM", "Imaging Measurement Report"));
    put_str(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    put_seq(
        &mut o,
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![item(|t| {
            put_str(t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
            put_str(t, tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
        })],
    );
    let library: Vec<Obj> = volume
        .slices
        .iter()
        .map(|sl| {
            item(|c| {
                put_str(c, tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS");
                put_str(c, tags::VALUE_TYPE, VR::CS, "IMAGE");
                put_seq(
                    c,
                    tags::REFERENCED_SOP_SEQUENCE,
                    vec![source_slice_ref(sl, None)],
                );
            })
        })
        .collect();
    let mut root = vec![
        code(
            "HAS CONCEPT MOD",
            &C("121049", "DCM", "Language of Content Item and Descendants"),
            &C("en-US", "RFC5646", "English (United States)"),
        ),
        code(
            "HAS OBS CONTEXT",
            &C("121005", "DCM", "Observer Type"),
            &C("121007", "DCM", "Device"),
        ),
        uidref(
            "HAS OBS CONTEXT",
            &C("121012", "DCM", "Device Observer UID"),
            crate::IMPLEMENTATION_CLASS_UID,
        ),
        text(
            "HAS OBS CONTEXT",
            &C("121013", "DCM", "Device Observer Name"),
            &opts.model_name,
        ),
        text(
            "HAS OBS CONTEXT",
            &C("121014", "DCM", "Device Observer Manufacturer"),
            &opts.manufacturer,
        ),
        code(
            "HAS CONCEPT MOD",
            &C("121058", "DCM", "Procedure reported"),
            &C("363679005", "SCT", "Imaging procedure"),
        ),
    ];
    root.push(container(
        "CONTAINS",
        &C("111028", "DCM", "Image Library"),
        vec![container(
            "CONTAINS",
            &C("126200", "DCM", "Image Library Group"),
            library,
        )],
    ));
    root.push(container(
        "CONTAINS",
        &C("126010", "DCM", "Imaging Measurements"),
        seg.segments
            .iter()
            .map(|s| measurement_group(s, input, seg_uid))
            .collect(),
    ));
    put_seq(&mut o, tags::CONTENT_SEQUENCE, root);
    let object = with_meta(o, uids::COMPREHENSIVE3_DSR_STORAGE, &sop_instance_uid).map_err(err)?;
    Ok(vec![ResultObject {
        summary: json!({ "groups": seg.segments.len() }),
        sop_class_uid: uids::COMPREHENSIVE3_DSR_STORAGE.to_string(),
        sop_instance_uid,
        series_instance_uid,
        object,
    }])
}
