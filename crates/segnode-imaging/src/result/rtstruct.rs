//! The RT Structure Set form (`rtstruct`): every segment as a ROI of CLOSED_PLANAR contours on the
//! source slices ([`super::contour`]: holes are separate contours, the even-odd fill of a slice's
//! contours gives the mask back), and every landmark of a segment (an electrode array's contacts) as a
//! POINT ROI of interpreted type MARKER.
//!
//! Contour points lie on their slice's plane (computed from the slice's own position), are written with
//! 0.001 mm resolution (DS values well under 16 characters), and a contour never holds more points than
//! fit the 64 KiB length of an Explicit VR DS element. Each contour names its source slice
//! (ContourImageSequence); the structure set lists every slice of the series. ROIs carry the SEG's
//! SNOMED codes (RT ROI Identification Code Sequence).

use super::contour::contours;
use super::dataset::{code_item, item, put_seq, put_str, Obj};
use super::header::{put_common, source_slice_ref, with_meta, NewObject, Stamp};
use super::object::{FormInput, ResultError, ResultObject};
use super::sc::segment_rgb;
use super::uid::new_uid;
use crate::segment::codes::ANATOMICAL_STRUCTURE;
use crate::volume::{Vec3, Volume};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use serde_json::json;

/// Largest Explicit VR DS value we write, in bytes (the element length is 16-bit).
const MAX_DS_BYTES: usize = 65_534;
/// Detached Study Management SOP Class, which RTReferencedStudySequence names.
const STUDY_COMPONENT_SOP_CLASS: &str = "1.2.840.10008.3.1.2.3.1";

/// A coordinate in mm as DS with 0.001 mm resolution.
fn mm(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

fn contour_data(points: &[Vec3]) -> String {
    points
        .iter()
        .flat_map(|p| p.iter().map(|c| mm(*c)))
        .collect::<Vec<_>>()
        .join("\\")
}

/// Patient position of pixel-index `(i, j)` on slice `k`, from the slice's own position.
fn on_slice(volume: &Volume, k: usize, i: f64, j: f64) -> Vec3 {
    let g = &volume.geometry;
    let p = volume.slices[k].position;
    let (ci, cj) = (g.pixel_spacing[1], g.pixel_spacing[0]);
    [0, 1, 2].map(|a| p[a] + g.row_dir[a] * i * ci + g.col_dir[a] * j * cj)
}

struct Roi {
    number: u32,
    name: String,
    rgb: [u8; 3],
    interpreted: &'static str,
    codes: Option<Obj>,
    contours: Vec<Obj>,
}

/// Build the structure set.
pub fn build(input: &FormInput) -> Result<Vec<ResultObject>, ResultError> {
    let (volume, seg, opts) = (input.volume, input.seg, input.opts);
    let err = |reason: String| ResultError::Build {
        form: "rtstruct",
        reason,
    };
    if seg.segments.is_empty() {
        return Err(err(
            "nothing to write: the segmentation has no segments".into()
        ));
    }
    let info = &volume.series;
    if info.frame_of_reference_uid.is_empty() || info.study_instance_uid.is_empty() {
        return Err(err(
            "the source lacks a Frame of Reference or Study Instance UID".into(),
        ));
    }
    let [nk, rows, cols] = volume.shape();
    let labels = seg.labels.as_standard_layout();
    let labels = labels
        .as_slice()
        .ok_or_else(|| err("label layout".into()))?;
    let plane = rows * cols;
    // one point costs at most 3 × (11 characters + separator)
    let max_points = MAX_DS_BYTES / 36;
    let mut rois: Vec<Roi> = Vec::new();
    let mut contour_count = 0usize;
    for s in &seg.segments {
        let mut cs = Vec::new();
        for k in 0..nk {
            let lab = &labels[k * plane..(k + 1) * plane];
            let mask: Vec<bool> = lab.iter().map(|&l| l == s.number).collect();
            if !mask.iter().any(|&b| b) {
                continue;
            }
            for poly in contours(&mask, rows, cols, max_points) {
                let pts: Vec<Vec3> = poly
                    .iter()
                    .map(|p| on_slice(volume, k, p[0], p[1]))
                    .collect();
                let data = contour_data(&pts);
                if data.len() > MAX_DS_BYTES {
                    return Err(err(format!(
                        "a contour of {} points is too long",
                        pts.len()
                    )));
                }
                contour_count += 1;
                let slice = &volume.slices[k];
                cs.push(item(|c| {
                    put_seq(
                        c,
                        tags::CONTOUR_IMAGE_SEQUENCE,
                        vec![source_slice_ref(slice, None)],
                    );
                    put_str(c, tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR");
                    put_str(
                        c,
                        tags::NUMBER_OF_CONTOUR_POINTS,
                        VR::IS,
                        &pts.len().to_string(),
                    );
                    put_str(c, tags::CONTOUR_DATA, VR::DS, &data);
                }));
            }
        }
        let d = &s.description;
        let codes = item(|c| {
            *c = code_item(&d.property_type);
            if let Some(m) = &d.modifier {
                put_seq(
                    c,
                    tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                    vec![code_item(m)],
                );
            }
        });
        rois.push(Roi {
            number: rois.len() as u32 + 1,
            name: d.label.clone(),
            rgb: segment_rgb(s),
            interpreted: if d.category == ANATOMICAL_STRUCTURE {
                "ORGAN"
            } else {
                ""
            },
            codes: Some(codes),
            contours: cs,
        });
        for (n, p) in s.points.iter().enumerate() {
            rois.push(Roi {
                number: rois.len() as u32 + 1,
                name: format!("{} contact {}", d.label, n + 1),
                rgb: segment_rgb(s),
                interpreted: "MARKER",
                codes: None,
                contours: vec![item(|c| {
                    put_str(c, tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "POINT");
                    put_str(c, tags::NUMBER_OF_CONTOUR_POINTS, VR::IS, "1");
                    put_str(c, tags::CONTOUR_DATA, VR::DS, &contour_data(&[*p]));
                })],
            });
        }
    }
    let sop_instance_uid = new_uid();
    let series_instance_uid = new_uid();
    let at = Stamp::now();
    let mut o = Obj::new_empty();
    put_common(
        &mut o,
        info,
        &NewObject {
            sop_class_uid: uids::RT_STRUCTURE_SET_STORAGE,
            sop_instance_uid: &sop_instance_uid,
            series_instance_uid: &series_instance_uid,
            modality: "RTSTRUCT",
        },
        opts,
        &at,
    );
    // RT Series
    put_str(&mut o, tags::OPERATORS_NAME, VR::PN, "");
    // Structure Set
    put_str(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &opts.instance_number.to_string(),
    );
    put_str(
        &mut o,
        tags::STRUCTURE_SET_LABEL,
        VR::SH,
        &opts.content_label,
    );
    put_str(
        &mut o,
        tags::STRUCTURE_SET_NAME,
        VR::LO,
        &opts.series_description,
    );
    put_str(
        &mut o,
        tags::STRUCTURE_SET_DESCRIPTION,
        VR::ST,
        &opts.content_description,
    );
    put_str(&mut o, tags::STRUCTURE_SET_DATE, VR::DA, &at.date);
    put_str(&mut o, tags::STRUCTURE_SET_TIME, VR::TM, &at.time);
    put_seq(
        &mut o,
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![item(|f| {
            put_str(
                f,
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                &info.frame_of_reference_uid,
            );
            put_seq(
                f,
                tags::RT_REFERENCED_STUDY_SEQUENCE,
                vec![item(|st| {
                    put_str(
                        st,
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        STUDY_COMPONENT_SOP_CLASS,
                    );
                    put_str(
                        st,
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        &info.study_instance_uid,
                    );
                    put_seq(
                        st,
                        tags::RT_REFERENCED_SERIES_SEQUENCE,
                        vec![item(|se| {
                            put_str(
                                se,
                                tags::SERIES_INSTANCE_UID,
                                VR::UI,
                                &info.series_instance_uid,
                            );
                            put_seq(
                                se,
                                tags::CONTOUR_IMAGE_SEQUENCE,
                                volume
                                    .slices
                                    .iter()
                                    .map(|sl| source_slice_ref(sl, None))
                                    .collect(),
                            );
                        })],
                    );
                })],
            );
        })],
    );
    put_seq(
        &mut o,
        tags::STRUCTURE_SET_ROI_SEQUENCE,
        rois.iter()
            .map(|r| {
                item(|i| {
                    put_str(i, tags::ROI_NUMBER, VR::IS, &r.number.to_string());
                    put_str(
                        i,
                        tags::REFERENCED_FRAME_OF_REFERENCE_UID,
                        VR::UI,
                        &info.frame_of_reference_uid,
                    );
                    put_str(i, tags::ROI_NAME, VR::LO, &r.name);
                    put_str(i, tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC");
                })
            })
            .collect(),
    );
    // ROI Contour
    let roi_contours: Vec<Obj> = rois
        .iter_mut()
        .map(|r| {
            let cs = std::mem::take(&mut r.contours);
            item(|i| {
                put_str(
                    i,
                    tags::REFERENCED_ROI_NUMBER,
                    VR::IS,
                    &r.number.to_string(),
                );
                put_str(
                    i,
                    tags::ROI_DISPLAY_COLOR,
                    VR::IS,
                    &format!("{}\\{}\\{}", r.rgb[0], r.rgb[1], r.rgb[2]),
                );
                if !cs.is_empty() {
                    put_seq(i, tags::CONTOUR_SEQUENCE, cs);
                }
            })
        })
        .collect();
    put_seq(&mut o, tags::ROI_CONTOUR_SEQUENCE, roi_contours);
    // RT ROI Observations
    put_seq(
        &mut o,
        tags::RTROI_OBSERVATIONS_SEQUENCE,
        rois.iter()
            .map(|r| {
                item(|i| {
                    put_str(i, tags::OBSERVATION_NUMBER, VR::IS, &r.number.to_string());
                    put_str(
                        i,
                        tags::REFERENCED_ROI_NUMBER,
                        VR::IS,
                        &r.number.to_string(),
                    );
                    if let Some(c) = &r.codes {
                        put_seq(i, tags::RTROI_IDENTIFICATION_CODE_SEQUENCE, vec![c.clone()]);
                    }
                    put_str(i, tags::RTROI_INTERPRETED_TYPE, VR::CS, r.interpreted);
                    put_str(i, tags::ROI_INTERPRETER, VR::PN, "");
                })
            })
            .collect(),
    );
    let object = with_meta(o, uids::RT_STRUCTURE_SET_STORAGE, &sop_instance_uid).map_err(err)?;
    Ok(vec![ResultObject {
        summary: json!({ "rois": rois.len(), "contours": contour_count }),
        sop_class_uid: uids::RT_STRUCTURE_SET_STORAGE.to_string(),
        sop_instance_uid,
        series_instance_uid,
        object,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millimetres_fit_decimal_strings() {
        assert_eq!(mm(-0.0001), "0");
        assert_eq!(mm(12.5), "12.5");
        assert_eq!(mm(-249.51171875), "-249.512");
        assert!(mm(-99999.123456).len() <= 16);
    }
}
