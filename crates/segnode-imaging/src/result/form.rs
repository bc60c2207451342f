//! Result forms behind one trait: a [`ResultForm`] turns the source volume and its segmentation into the
//! DICOM objects a destination receives: the SEG (`seg`), an overlay series (`sc`), an RT Structure Set
//! (`rtstruct`) and a TID 1500 measurement report (`sr`). Each form is one module; [`form`] names them.
//! The SEG is built first: the report references its segments ([`FormInput::seg_ref`]).
//!
//! The caller (a worker) only sees [`ResultObject`]s: what to write, and the SOP class / instance it
//! announces when sending them.

use dicom_dictionary_std::uids;
use serde_json::json;

use super::object::{FormInput, ResultError, ResultObject, SegRef};
use super::options::ResultOptions;
use super::seg::SegObject;
use crate::segment::Segmentation;
use crate::volume::Volume;

/// A kind of result object.
pub trait ResultForm: Send + Sync {
    /// Name in the configuration and the job summary (`seg`, `sc`, `rtstruct`, `sr`).
    fn name(&self) -> &'static str;
    /// The SOP class of the objects this form writes.
    fn sop_class_uid(&self) -> &'static str;
    /// The objects for one segmentation (a SEG is one object; an overlay series is many).
    fn build(&self, input: &FormInput) -> Result<Vec<ResultObject>, ResultError>;
}

/// DICOM Segmentation Storage, BINARY, one object per result.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegForm;

impl ResultForm for SegForm {
    fn name(&self) -> &'static str {
        "seg"
    }

    fn sop_class_uid(&self) -> &'static str {
        uids::SEGMENTATION_STORAGE
    }

    fn build(&self, input: &FormInput) -> Result<Vec<ResultObject>, ResultError> {
        let obj = SegObject::build(input.volume, input.seg, input.opts).map_err(|source| {
            ResultError::Seg {
                form: "SEG",
                source,
            }
        })?;
        Ok(vec![ResultObject {
            summary: json!({ "frames": obj.frames.len() }),
            sop_class_uid: uids::SEGMENTATION_STORAGE.to_string(),
            sop_instance_uid: obj.sop_instance_uid,
            series_instance_uid: obj.series_instance_uid,
            object: obj.object,
        }])
    }
}

/// A form implemented by a module's `build` function.
struct FnForm {
    name: &'static str,
    sop_class_uid: &'static str,
    build: fn(&FormInput) -> Result<Vec<ResultObject>, ResultError>,
}

impl ResultForm for FnForm {
    fn name(&self) -> &'static str {
        self.name
    }

    fn sop_class_uid(&self) -> &'static str {
        self.sop_class_uid
    }

    fn build(&self, input: &FormInput) -> Result<Vec<ResultObject>, ResultError> {
        (self.build)(input)
    }
}

/// The names of the result forms, in the order they are built and listed (the SEG first: the report
/// references it).
pub const FORMS: &[&str] = &["seg", "sc", "rtstruct", "sr"];

/// The result form called `name` (one of [`FORMS`]).
pub fn form(name: &str) -> Option<Box<dyn ResultForm>> {
    let f = |name, sop_class_uid, build| -> Option<Box<dyn ResultForm>> {
        Some(Box::new(FnForm {
            name,
            sop_class_uid,
            build,
        }))
    };
    match name {
        "seg" => Some(Box::new(SegForm)),
        "sc" => f(
            "sc",
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            super::sc::build,
        ),
        "rtstruct" => f(
            "rtstruct",
            uids::RT_STRUCTURE_SET_STORAGE,
            super::rtstruct::build,
        ),
        "sr" => f("sr", uids::COMPREHENSIVE3_DSR_STORAGE, super::sr::build),
        _ => None,
    }
}

/// Build the forms named in `names` (in [`FORMS`] order, so the SEG comes before the report that
/// references it), each with the options `opts_for(form)` gives. Unknown names are an error.
pub fn build_forms(
    names: &[&str],
    volume: &Volume,
    seg: &Segmentation,
    opts_for: impl Fn(&str) -> ResultOptions,
) -> Result<Vec<(&'static str, Vec<ResultObject>)>, ResultError> {
    if let Some(bad) = names.iter().find(|n| !FORMS.contains(n)) {
        return Err(ResultError::Build {
            form: "result",
            reason: format!("unknown result form `{bad}` (known: {})", FORMS.join(", ")),
        });
    }
    let mut out = Vec::new();
    let mut seg_ref: Option<SegRef> = None;
    for name in FORMS.iter().copied().filter(|f| names.contains(f)) {
        let Some(f) = form(name) else { continue };
        let opts = opts_for(name);
        let objects = f.build(&FormInput {
            volume,
            seg,
            opts: &opts,
            seg_ref: seg_ref.as_ref(),
        })?;
        if name == "seg" {
            seg_ref = objects.first().map(|o| SegRef {
                sop_instance_uid: o.sop_instance_uid.clone(),
                series_instance_uid: o.series_instance_uid.clone(),
            });
        }
        out.push((name, objects));
    }
    Ok(out)
}

/// The form whose objects have SOP class `uid` (for the delivery history).
pub fn form_of_sop_class(uid: &str) -> Option<&'static str> {
    FORMS
        .iter()
        .copied()
        .find(|n| form(n).is_some_and(|f| f.sop_class_uid() == uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_form_exists_and_knows_its_name() {
        for name in FORMS {
            assert_eq!(form(name).expect("listed form").name(), *name);
        }
        assert!(form("pdf").is_none());
        assert_eq!(
            form_of_sop_class(uids::RT_STRUCTURE_SET_STORAGE),
            Some("rtstruct")
        );
        assert_eq!(form_of_sop_class("1.2.3"), None);
    }
}
