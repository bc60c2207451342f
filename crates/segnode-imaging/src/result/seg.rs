//! DICOM Segmentation Storage (BINARY) from a [`Segmentation`] on a [`Volume`]'s grid.
//!
//! Built like highdicom's `seg/sop.py`: typed inputs are validated up front ([`SegObject::build`]), then
//! the modules are filled in order. One frame per (segment, source slice) that holds mask, frames ordered
//! by segment then slice, bits packed contiguously across frames (LSB first) and padded to an even
//! length. Each frame carries its plane position, segment identification, dimension index values (in the
//! order of the DimensionIndexSequence: segment number, then slice position) and a source image reference
//! with SpatialLocationsPreserved = YES. A frame of a multi-frame source is referenced as its instance
//! and ReferencedFrameNumber.

use super::dataset::{code_item, ds, ds_multi, item, put_seq, put_str, put_u16, Obj};
use super::header::{put_common, source_slice_ref, with_meta, NewObject, Stamp};
use super::options::ResultOptions;
use super::uid::new_uid;
use crate::segment::{Segment, Segmentation};
use crate::volume::Volume;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::FileDicomObject;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SegError {
    #[error("nothing to write: the segmentation has no segments")]
    Empty,
    #[error("label map shape {labels:?} differs from the volume shape {volume:?}")]
    ShapeMismatch {
        labels: Vec<usize>,
        volume: Vec<usize>,
    },
    #[error("segment numbers must be 1..=N in order, found {0:?}")]
    SegmentNumbers(Vec<u8>),
    #[error("segment {0} has no voxel")]
    EmptySegment(u8),
    #[error(
        "source series lacks {0}: a SEG must reference the study / series / frame of reference"
    )]
    MissingSource(&'static str),
    #[error("too many frames ({0}) for one object")]
    TooManyFrames(usize),
    #[error("cannot build the file meta: {0}")]
    Meta(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// One frame of the SEG: which segment, which source slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub segment: u8,
    pub slice: usize,
}

/// A built SEG, ready to write.
pub struct SegObject {
    pub object: FileDicomObject<Obj>,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub frames: Vec<FrameRef>,
}

impl std::fmt::Debug for SegObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegObject")
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("frames", &self.frames.len())
            .finish()
    }
}

impl SegObject {
    /// Validate the inputs and build the SEG.
    pub fn build(
        source: &Volume,
        seg: &Segmentation,
        opts: &ResultOptions,
    ) -> Result<SegObject, SegError> {
        validate(source, seg)?;
        let [nk, rows, cols] = source.shape();
        // frames: per segment, every slice holding mask
        let mut frames = Vec::new();
        for s in &seg.segments {
            for k in 0..nk {
                if seg
                    .labels
                    .index_axis(ndarray::Axis(0), k)
                    .iter()
                    .any(|&l| l == s.number)
                {
                    frames.push(FrameRef {
                        segment: s.number,
                        slice: k,
                    });
                }
            }
        }
        if frames.len() > i32::MAX as usize / 2 {
            return Err(SegError::TooManyFrames(frames.len()));
        }
        let sop_instance_uid = new_uid();
        let series_instance_uid = new_uid();
        let at = Stamp::now();
        let info = &source.series;
        let g = &source.geometry;
        let mut o = Obj::new_empty();

        put_common(
            &mut o,
            info,
            &NewObject {
                sop_class_uid: uids::SEGMENTATION_STORAGE,
                sop_instance_uid: &sop_instance_uid,
                series_instance_uid: &series_instance_uid,
                modality: "SEG",
            },
            opts,
            &at,
        );
        let (date, time) = (&at.date, &at.time);
        // General Image / Segmentation Image
        put_str(
            &mut o,
            tags::INSTANCE_NUMBER,
            VR::IS,
            &opts.instance_number.to_string(),
        );
        put_str(&mut o, tags::CONTENT_DATE, VR::DA, date);
        put_str(&mut o, tags::CONTENT_TIME, VR::TM, time);
        put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
        put_str(&mut o, tags::CONTENT_LABEL, VR::CS, &opts.content_label);
        put_str(
            &mut o,
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            &opts.content_description,
        );
        put_str(
            &mut o,
            tags::CONTENT_CREATOR_NAME,
            VR::PN,
            &opts.content_creator,
        );
        put_str(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
        put_str(&mut o, tags::SEGMENTS_OVERLAP, VR::CS, "NO");
        put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        // Image Pixel
        put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 1);
        put_str(
            &mut o,
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2",
        );
        put_u16(&mut o, tags::ROWS, rows as u16);
        put_u16(&mut o, tags::COLUMNS, cols as u16);
        put_u16(&mut o, tags::BITS_ALLOCATED, 1);
        put_u16(&mut o, tags::BITS_STORED, 1);
        put_u16(&mut o, tags::HIGH_BIT, 0);
        put_u16(&mut o, tags::PIXEL_REPRESENTATION, 0);
        put_str(
            &mut o,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &frames.len().to_string(),
        );
        // Segment descriptions
        put_seq(
            &mut o,
            tags::SEGMENT_SEQUENCE,
            seg.segments.iter().map(segment_item).collect(),
        );
        // Multi-frame Dimension
        let dim_org = new_uid();
        put_seq(
            &mut o,
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(|i| {
                put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_org)
            })],
        );
        put_str(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
        let dim = |pointer: dicom_core::Tag, group: dicom_core::Tag, label: &str| {
            item(|i| {
                put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_org);
                i.put(DataElement::new(
                    tags::DIMENSION_INDEX_POINTER,
                    VR::AT,
                    PrimitiveValue::from(pointer),
                ));
                i.put(DataElement::new(
                    tags::FUNCTIONAL_GROUP_POINTER,
                    VR::AT,
                    PrimitiveValue::from(group),
                ));
                put_str(i, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
            })
        };
        put_seq(
            &mut o,
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dim(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Segment Number",
                ),
                dim(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Image Position Patient",
                ),
            ],
        );
        // Shared functional groups: orientation and pixel measures
        let thickness = info
            .slice_thickness
            .filter(|t| *t > 0.0)
            .unwrap_or(g.slice_spacing);
        let shared = item(|i| {
            put_seq(
                i,
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(|p| {
                    let iop = [
                        g.row_dir[0],
                        g.row_dir[1],
                        g.row_dir[2],
                        g.col_dir[0],
                        g.col_dir[1],
                        g.col_dir[2],
                    ];
                    put_str(p, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &ds_multi(&iop));
                })],
            );
            put_seq(
                i,
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(|p| {
                    put_str(p, tags::PIXEL_SPACING, VR::DS, &ds_multi(&g.pixel_spacing));
                    put_str(p, tags::SLICE_THICKNESS, VR::DS, &ds(thickness));
                    put_str(
                        p,
                        tags::SPACING_BETWEEN_SLICES,
                        VR::DS,
                        &ds(g.slice_spacing),
                    );
                })],
            );
        });
        put_seq(
            &mut o,
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![shared],
        );
        // Per-frame functional groups
        let per_frame: Vec<Obj> = frames.iter().map(|f| frame_item(source, *f)).collect();
        put_seq(
            &mut o,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            per_frame,
        );
        // Common Instance Reference: every source instance
        put_seq(
            &mut o,
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item(|s| {
                put_str(
                    s,
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    &info.series_instance_uid,
                );
                put_seq(
                    s,
                    tags::REFERENCED_INSTANCE_SEQUENCE,
                    referenced_instances(source),
                );
            })],
        );
        // Pixel data
        let bits = pack_frames(seg, &frames, rows, cols);
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(bits),
        ));

        let object =
            with_meta(o, uids::SEGMENTATION_STORAGE, &sop_instance_uid).map_err(SegError::Meta)?;
        Ok(SegObject {
            object,
            sop_instance_uid,
            series_instance_uid,
            frames,
        })
    }

    /// Write to `path` atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), SegError> {
        let werr = |reason: String| SegError::Write {
            path: path.display().to_string(),
            reason,
        };
        let tmp = path.with_extension("dcm.part");
        self.object
            .write_to_file(&tmp)
            .map_err(|e| werr(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| werr(e.to_string()))
    }
}

fn validate(source: &Volume, seg: &Segmentation) -> Result<(), SegError> {
    if seg.segments.is_empty() {
        return Err(SegError::Empty);
    }
    if seg.labels.shape() != source.hu.shape() {
        return Err(SegError::ShapeMismatch {
            labels: seg.labels.shape().to_vec(),
            volume: source.hu.shape().to_vec(),
        });
    }
    let numbers: Vec<u8> = seg.segments.iter().map(|s| s.number).collect();
    if numbers
        .iter()
        .enumerate()
        .any(|(n, &s)| s as usize != n + 1)
    {
        return Err(SegError::SegmentNumbers(numbers));
    }
    let mut present = vec![false; numbers.len() + 1];
    for &l in seg.labels.iter() {
        if (l as usize) < present.len() {
            present[l as usize] = true;
        }
    }
    if let Some(&s) = numbers.iter().find(|&&s| !present[s as usize]) {
        return Err(SegError::EmptySegment(s));
    }
    let info = &source.series;
    for (v, name) in [
        (&info.study_instance_uid, "StudyInstanceUID"),
        (&info.series_instance_uid, "SeriesInstanceUID"),
        (&info.frame_of_reference_uid, "FrameOfReferenceUID"),
    ] {
        if v.is_empty() {
            return Err(SegError::MissingSource(name));
        }
    }
    if source
        .slices
        .iter()
        .any(|s| s.sop_instance_uid.is_empty() || s.sop_class_uid.is_empty())
    {
        return Err(SegError::MissingSource(
            "SOPInstanceUID / SOPClassUID of a slice",
        ));
    }
    Ok(())
}

/// ReferencedInstanceSequence of the Common Instance Reference module: one item per source instance, in
/// slice order. A multi-frame source is one instance however many of its frames are slices. The frames
/// are named per SEG frame (SourceImageSequence > ReferencedFrameNumber), not here: this sequence uses
/// the SOP Instance Reference macro, which has no ReferencedFrameNumber (dciodvfy would call the SEG a
/// Standard Extended SOP Class; highdicom writes none here either).
fn referenced_instances(source: &Volume) -> Vec<Obj> {
    let mut seen = std::collections::HashSet::new();
    source
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
        .collect()
}

fn segment_item(s: &Segment) -> Obj {
    let d = &s.description;
    item(|i| {
        put_u16(i, tags::SEGMENT_NUMBER, s.number as u16);
        put_str(i, tags::SEGMENT_LABEL, VR::LO, &d.label);
        put_seq(
            i,
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code_item(&d.category)],
        );
        let mut ty = code_item(&d.property_type);
        if let Some(m) = &d.modifier {
            put_seq(
                &mut ty,
                tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                vec![code_item(m)],
            );
        }
        put_seq(i, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![ty]);
        put_str(i, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
        put_str(i, tags::SEGMENT_ALGORITHM_NAME, VR::LO, &d.algorithm_name);
        put_seq(
            i,
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![item(|a| {
                put_seq(
                    a,
                    tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                    vec![code_item(&d.algorithm_family)],
                );
                put_str(a, tags::ALGORITHM_NAME, VR::LO, &d.algorithm_name);
                put_str(a, tags::ALGORITHM_VERSION, VR::LO, &d.algorithm_version);
            })],
        );
        if let Some(lab) = d.cielab {
            i.put(DataElement::new(
                tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                VR::US,
                PrimitiveValue::from([lab[0], lab[1], lab[2]]),
            ));
        }
    })
}

fn frame_item(source: &Volume, f: FrameRef) -> Obj {
    let slice = &source.slices[f.slice];
    item(|i| {
        put_seq(
            i,
            tags::DERIVATION_IMAGE_SEQUENCE,
            vec![item(|d| {
                put_seq(
                    d,
                    tags::SOURCE_IMAGE_SEQUENCE,
                    vec![{
                        let mut s = source_slice_ref(
                            slice,
                            Some(&crate::segment::codes::CodedConcept::new(
                                "121322",
                                "DCM",
                                "Source image for image processing operation",
                            )),
                        );
                        put_str(&mut s, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
                        s
                    }],
                );
                put_seq(
                    d,
                    tags::DERIVATION_CODE_SEQUENCE,
                    vec![code_item(&crate::segment::codes::CodedConcept::new(
                        "113076",
                        "DCM",
                        "Segmentation",
                    ))],
                );
            })],
        );
        put_seq(
            i,
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item(|c| {
                c.put(DataElement::new(
                    tags::DIMENSION_INDEX_VALUES,
                    VR::UL,
                    PrimitiveValue::from([f.segment as u32, f.slice as u32 + 1]),
                ));
            })],
        );
        put_seq(
            i,
            tags::PLANE_POSITION_SEQUENCE,
            vec![item(|p| {
                put_str(
                    p,
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    &ds_multi(&slice.position),
                )
            })],
        );
        put_seq(
            i,
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![item(|s| {
                put_u16(s, tags::REFERENCED_SEGMENT_NUMBER, f.segment as u16)
            })],
        );
    })
}

/// Pack the frames' pixels (1 = in segment) bit by bit, LSB first, contiguously across frame boundaries;
/// pad to an even number of bytes.
pub fn pack_frames(seg: &Segmentation, frames: &[FrameRef], rows: usize, cols: usize) -> Vec<u8> {
    use rayon::prelude::*;
    let px = rows * cols;
    let total_bits = frames.len() * px;
    let mut out = vec![0u8; total_bits.div_ceil(8).next_multiple_of(2)];
    let pack = |dst: &mut [u8], first_bit: usize, f: &FrameRef| {
        let plane = seg.labels.index_axis(ndarray::Axis(0), f.slice);
        for (n, &l) in plane.iter().enumerate() {
            if l == f.segment {
                let bit = first_bit + n;
                dst[bit >> 3] |= 1 << (bit & 7);
            }
        }
    };
    if px % 8 == 0 && px > 0 {
        // frames start on byte boundaries: pack them in parallel
        let fb = px / 8;
        out[..frames.len() * fb]
            .par_chunks_mut(fb)
            .zip(frames.par_iter())
            .for_each(|(dst, f)| pack(dst, 0, f));
    } else {
        for (n, f) in frames.iter().enumerate() {
            pack(&mut out, n * px, f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn seg_of(labels: Array3<u8>) -> Segmentation {
        Segmentation {
            labels,
            segments: vec![],
            notes: vec![],
            details: None,
        }
    }

    #[test]
    fn bits_are_packed_across_frame_boundaries_lsb_first() {
        // 3x3 frames (9 bits): frame boundaries fall inside bytes
        let mut l = Array3::<u8>::zeros((2, 3, 3));
        l[[0, 0, 0]] = 1; // bit 0
        l[[0, 2, 2]] = 1; // bit 8
        l[[1, 0, 0]] = 1; // bit 9 in frame 2
        l[[1, 1, 1]] = 2; // not segment 1
        let frames = [
            FrameRef {
                segment: 1,
                slice: 0,
            },
            FrameRef {
                segment: 1,
                slice: 1,
            },
        ];
        let b = pack_frames(&seg_of(l), &frames, 3, 3);
        assert_eq!(b.len(), 4); // 18 bits -> 3 bytes -> padded to 4
        assert_eq!(b, vec![0b0000_0001, 0b0000_0011, 0, 0]);
    }

    #[test]
    fn parallel_and_sequential_packing_agree() {
        // 4x4 frames (byte aligned, parallel path) against bit-by-bit reference
        let l = Array3::from_shape_fn((3, 4, 4), |(k, j, i)| ((k * 7 + j * 3 + i) % 3) as u8);
        let frames: Vec<FrameRef> = (0..3)
            .flat_map(|k| {
                [1u8, 2].map(move |s| FrameRef {
                    segment: s,
                    slice: k,
                })
            })
            .collect();
        let seg = seg_of(l.clone());
        let b = pack_frames(&seg, &frames, 4, 4);
        let mut bit = 0;
        for f in &frames {
            for j in 0..4 {
                for i in 0..4 {
                    let want = l[[f.slice, j, i]] == f.segment;
                    assert_eq!((b[bit / 8] >> (bit % 8)) & 1 == 1, want);
                    bit += 1;
                }
            }
        }
    }

    #[test]
    fn packing_pads_to_even_length() {
        let l = Array3::<u8>::ones((1, 4, 4));
        let b = pack_frames(
            &seg_of(l),
            &[FrameRef {
                segment: 1,
                slice: 0,
            }],
            4,
            4,
        );
        assert_eq!(b, vec![0xff, 0xff]);
        let l = Array3::<u8>::ones((1, 2, 4));
        let b = pack_frames(
            &seg_of(l),
            &[FrameRef {
                segment: 1,
                slice: 0,
            }],
            2,
            4,
        );
        assert_eq!(b, vec![0xff, 0]);
    }
}
