//! The overlay series (`sc`): Secondary Capture Image Storage, one 8-bit RGB instance per source slice
//! that holds a segment, the slice in the form's display window with each segment's outline in its
//! colour and a small legend ([`super::overlay`]). The grey values are the loaded volume's HU (below
//! −1024 HU clamped to −1024, like every segmenter sees them); padding / out-of-field pixels are black.
//!
//! Each instance sits where its source slice sits: the source's Frame of Reference, Image Position /
//! Orientation (Patient), Pixel Spacing and Slice Thickness are copied (attributes the SC IOD does not
//! list, so validators note them as an extension, not as errors), and SourceImageSequence references the
//! slice. BurnedInAnnotation is YES because the legend is text in the pixels; no patient text is burned
//! in.

use super::dataset::{ds, ds_multi, put_seq, put_str, put_u16, Obj};
use super::header::{put_common, source_slice_ref, with_meta, NewObject, Stamp};
use super::object::{FormInput, ResultError, ResultObject};
use super::overlay::{cielab_to_rgb, render, Legend, OverlaySegment, SliceImage};
use super::uid::new_uid;
use crate::segment::codes::CodedConcept;
use crate::segment::Segment;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use serde_json::json;

/// Purpose of reference "Source image for image processing operation" (DCM 121322).
const SOURCE_FOR_PROCESSING: CodedConcept = CodedConcept::new(
    "121322",
    "DCM",
    "Source image for image processing operation",
);

/// Colours for segments that carry no recommended display colour.
const PALETTE: [[u8; 3]; 6] = [
    [255, 64, 64],
    [64, 160, 255],
    [255, 200, 0],
    [64, 220, 64],
    [220, 64, 220],
    [0, 220, 220],
];

/// The display colour of a segment.
pub fn segment_rgb(s: &Segment) -> [u8; 3] {
    s.description
        .cielab
        .map(cielab_to_rgb)
        .unwrap_or(PALETTE[(s.number as usize + PALETTE.len() - 1) % PALETTE.len()])
}

/// The legend line of a segment: its label and what was measured that a reader wants first.
pub fn legend_line(s: &Segment) -> String {
    let get = |name: &str| s.measurements.iter().find(|m| m.name == name);
    let mut parts = vec![s.description.label.clone()];
    if let Some(v) = get("volume") {
        parts.push(format!("{:.0} mL", v.value));
    }
    if let Some(c) = get("contacts") {
        parts.push(format!("{:.0} contacts", c.value));
    }
    if let Some(a) = get("insertion_angle") {
        parts.push(format!("{:.0} deg", a.value));
    }
    parts.join("  ")
}

/// Row / column direction letters of a direction vector (LPS), dominant axis first (PatientOrientation).
fn orientation_letters(v: [f64; 3]) -> String {
    let mut axes: Vec<(f64, char)> = vec![
        (v[0], if v[0] >= 0.0 { 'L' } else { 'R' }),
        (v[1], if v[1] >= 0.0 { 'P' } else { 'A' }),
        (v[2], if v[2] >= 0.0 { 'H' } else { 'F' }),
    ];
    axes.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
    axes.iter()
        .filter(|(c, _)| c.abs() > 0.1)
        .map(|(_, l)| *l)
        .collect()
}

/// Build the overlay series.
pub fn build(input: &FormInput) -> Result<Vec<ResultObject>, ResultError> {
    let (volume, seg, opts) = (input.volume, input.seg, input.opts);
    let err = |reason: String| ResultError::Build { form: "sc", reason };
    if seg.segments.is_empty() {
        return Err(err(
            "nothing to draw: the segmentation has no segments".into()
        ));
    }
    let [nk, rows, cols] = volume.shape();
    if rows > u16::MAX as usize || cols > u16::MAX as usize {
        return Err(err(format!("slice {rows}×{cols} too large")));
    }
    let segments: Vec<OverlaySegment> = seg
        .segments
        .iter()
        .map(|s| OverlaySegment {
            number: s.number,
            rgb: segment_rgb(s),
        })
        .collect();
    let mut legend = Legend {
        entries: seg
            .segments
            .iter()
            .map(|s| (segment_rgb(s), legend_line(s)))
            .collect(),
        notes: Vec::new(),
    };
    if !opts.note.is_empty() {
        legend.notes.push(opts.note.clone());
    }
    let series_instance_uid = new_uid();
    let at = Stamp::now();
    let g = &volume.geometry;
    let iop = [
        g.row_dir[0],
        g.row_dir[1],
        g.row_dir[2],
        g.col_dir[0],
        g.col_dir[1],
        g.col_dir[2],
    ];
    let thickness = volume
        .series
        .slice_thickness
        .filter(|t| *t > 0.0)
        .unwrap_or(g.slice_spacing);
    let hu = volume.hu.as_standard_layout();
    let labels = seg.labels.as_standard_layout();
    let (hu, labels) = (
        hu.as_slice().ok_or_else(|| err("volume layout".into()))?,
        labels
            .as_slice()
            .ok_or_else(|| err("label layout".into()))?,
    );
    let plane = rows * cols;
    let mut out = Vec::new();
    for k in 0..nk {
        let lab = &labels[k * plane..(k + 1) * plane];
        if !lab.iter().any(|&l| l != 0) {
            continue;
        }
        let pixels = render(
            SliceImage {
                hu: &hu[k * plane..(k + 1) * plane],
                labels: lab,
                outside: volume.out_of_field.as_ref().map(|m| m.slice_words(k)),
                rows,
                cols,
            },
            opts.window,
            &segments,
            &legend,
        );
        let slice = &volume.slices[k];
        let sop_instance_uid = new_uid();
        let mut o = Obj::new_empty();
        put_common(
            &mut o,
            &volume.series,
            &NewObject {
                sop_class_uid: uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
                sop_instance_uid: &sop_instance_uid,
                series_instance_uid: &series_instance_uid,
                modality: "OT",
            },
            opts,
            &at,
        );
        // General Series: the overlay shows both sides or an unpaired structure: no one laterality
        put_str(&mut o, tags::LATERALITY, VR::CS, "");
        // SC Equipment
        put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
        // General Image
        put_str(
            &mut o,
            tags::INSTANCE_NUMBER,
            VR::IS,
            &(out.len() + 1).to_string(),
        );
        put_str(
            &mut o,
            tags::PATIENT_ORIENTATION,
            VR::CS,
            &format!(
                "{}\\{}",
                orientation_letters(g.row_dir),
                orientation_letters(g.col_dir)
            ),
        );
        put_str(&mut o, tags::CONTENT_DATE, VR::DA, &at.date);
        put_str(&mut o, tags::CONTENT_TIME, VR::TM, &at.time);
        put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
        put_str(
            &mut o,
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            &format!(
                "Segment outlines drawn on the source slice, window {}/{}",
                ds(opts.window.width),
                ds(opts.window.center)
            ),
        );
        put_seq(
            &mut o,
            tags::SOURCE_IMAGE_SEQUENCE,
            vec![source_slice_ref(slice, Some(&SOURCE_FOR_PROCESSING))],
        );
        put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
        put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        // where the slice lies (copied from the source)
        put_str(
            &mut o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &ds_multi(&slice.position),
        );
        put_str(
            &mut o,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            &ds_multi(&iop),
        );
        put_str(
            &mut o,
            tags::PIXEL_SPACING,
            VR::DS,
            &ds_multi(&g.pixel_spacing),
        );
        put_str(&mut o, tags::SLICE_THICKNESS, VR::DS, &ds(thickness));
        // Image Pixel
        put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 3);
        put_str(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put_u16(&mut o, tags::PLANAR_CONFIGURATION, 0);
        put_u16(&mut o, tags::ROWS, rows as u16);
        put_u16(&mut o, tags::COLUMNS, cols as u16);
        put_u16(&mut o, tags::BITS_ALLOCATED, 8);
        put_u16(&mut o, tags::BITS_STORED, 8);
        put_u16(&mut o, tags::HIGH_BIT, 7);
        put_u16(&mut o, tags::PIXEL_REPRESENTATION, 0);
        let mut px = pixels;
        if px.len() % 2 == 1 {
            px.push(0);
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(px),
        ));
        let object =
            with_meta(o, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &sop_instance_uid).map_err(err)?;
        out.push(ResultObject {
            summary: json!({ "slice": k }),
            sop_class_uid: uids::SECONDARY_CAPTURE_IMAGE_STORAGE.to_string(),
            sop_instance_uid,
            series_instance_uid: series_instance_uid.clone(),
            object,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_letters_follow_the_dominant_axis() {
        assert_eq!(orientation_letters([1.0, 0.0, 0.0]), "L");
        assert_eq!(orientation_letters([0.0, 1.0, 0.0]), "P");
        assert_eq!(orientation_letters([0.0, 0.0, -1.0]), "F");
        assert_eq!(orientation_letters([-0.8, 0.6, 0.0]), "RP");
    }
}
