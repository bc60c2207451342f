//! Reading back the DICOM SEG a worker kept locally (in `dispatch.outbox_dir`) as a label volume on the
//! grid of the source [`Volume`]: each frame is placed on the slice whose SOP Instance UID (and frame
//! number, for a multi-frame source) it references, so the overlay shows exactly what was sent to PACS.

use std::collections::HashMap;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use ndarray::Array3;
use segnode_imaging::volume::Volume;

/// Why a SEG could not be read as an overlay.
#[derive(Debug, thiserror::Error)]
pub enum SegReadError {
    #[error("cannot open the SEG {path}: {message}")]
    Open { path: String, message: String },
    #[error("SEG {what}: {message}")]
    Content { what: &'static str, message: String },
}

fn content(what: &'static str, message: impl ToString) -> SegReadError {
    SegReadError::Content {
        what,
        message: message.to_string(),
    }
}

/// One segment of a SEG: its number and label.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SegmentInfo {
    pub number: u8,
    pub label: String,
}

/// Segment masks as labels on the volume grid (`[k, j, i]`, 0 = none, else the segment number; where
/// segments overlap the later frame wins, which is only a display choice).
#[derive(Debug, Clone)]
pub struct LabelVolume {
    pub labels: Array3<u8>,
    pub segments: Vec<SegmentInfo>,
}

fn text(o: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    o.element(tag).ok().and_then(|e| {
        e.to_str()
            .ok()
            .map(|s| s.trim_end_matches('\0').trim().to_string())
    })
}

fn int(o: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    o.element(tag).ok().and_then(|e| e.to_int::<i64>().ok())
}

fn first_item(o: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    o.element(tag).ok()?.items()?.first()
}

/// Read `path` (a binary SEG) onto the grid of `volume`. Frames referencing a slice the volume does not
/// hold are skipped.
pub fn read_seg(path: &Path, volume: &Volume) -> Result<LabelVolume, SegReadError> {
    let obj = dicom_object::open_file(path).map_err(|e| SegReadError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let [nk, nj, ni] = volume.shape();
    let rows = int(&obj, tags::ROWS).ok_or_else(|| content("Rows", "missing"))? as usize;
    let cols = int(&obj, tags::COLUMNS).ok_or_else(|| content("Columns", "missing"))? as usize;
    if rows != nj || cols != ni {
        return Err(content(
            "size",
            format!("{rows}×{cols} frames on a {nj}×{ni} volume"),
        ));
    }
    let mut segments = Vec::new();
    for item in obj
        .element(tags::SEGMENT_SEQUENCE)
        .map_err(|e| content("SegmentSequence", e))?
        .items()
        .unwrap_or(&[])
    {
        let number = int(item, tags::SEGMENT_NUMBER)
            .filter(|n| (1..=255).contains(n))
            .ok_or_else(|| content("SegmentNumber", "missing or out of 1…255"))?;
        segments.push(SegmentInfo {
            number: number as u8,
            label: text(item, tags::SEGMENT_LABEL).unwrap_or_default(),
        });
    }
    let slice_of: HashMap<(&str, u32), usize> = volume
        .slices
        .iter()
        .enumerate()
        .map(|(k, s)| {
            (
                (s.sop_instance_uid.as_str(), s.frame_number.unwrap_or(0)),
                k,
            )
        })
        .collect();
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| content("PixelData", e))?
        .to_bytes()
        .map_err(|e| content("PixelData", e))?;
    let frame_bits = rows * cols;
    let mut labels = Array3::<u8>::zeros((nk, nj, ni));
    let frames = obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .map_err(|e| content("PerFrameFunctionalGroupsSequence", e))?
        .items()
        .unwrap_or(&[]);
    if pixels.len() * 8 < frames.len() * frame_bits {
        return Err(content(
            "PixelData",
            format!("{} bytes for {} frames", pixels.len(), frames.len()),
        ));
    }
    for (f, fg) in frames.iter().enumerate() {
        let Some(number) = first_item(fg, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|s| int(s, tags::REFERENCED_SEGMENT_NUMBER))
            .filter(|n| (1..=255).contains(n))
        else {
            continue;
        };
        let Some(source) = first_item(fg, tags::DERIVATION_IMAGE_SEQUENCE)
            .and_then(|d| first_item(d, tags::SOURCE_IMAGE_SEQUENCE))
        else {
            continue;
        };
        let Some(sop) = text(source, tags::REFERENCED_SOP_INSTANCE_UID) else {
            continue;
        };
        let frame = int(source, tags::REFERENCED_FRAME_NUMBER).unwrap_or(0) as u32;
        let Some(&k) = slice_of
            .get(&(sop.as_str(), frame))
            .or_else(|| slice_of.get(&(sop.as_str(), 0)))
        else {
            continue;
        };
        let base = f * frame_bits;
        let mut plane = labels.index_axis_mut(ndarray::Axis(0), k);
        for p in 0..frame_bits {
            let bit = base + p;
            if pixels[bit / 8] >> (bit % 8) & 1 == 1 {
                plane[(p / cols, p % cols)] = number as u8;
            }
        }
    }
    Ok(LabelVolume { labels, segments })
}
