//! Reading a series folder: headers first (in parallel, up to the pixel data), then the stack is chosen,
//! then each chosen slice is decoded straight into its plane of the volume (in parallel), so the peak
//! memory is the volume plus one decoded slice per thread.
//!
//! A multi-frame object (Enhanced CT / MR, X-Ray 3D Craniofacial) becomes one header per frame, with the
//! frame's geometry and rescale from its functional groups (`frames.rs`); its frames then join the stack
//! exactly like single-frame slices. Such a file is opened once: native pixel data is decoded whole,
//! encapsulated (RLE, JPEG, JPEG 2000) frame by frame in parallel. The peak memory then also holds the
//! object (and, native, its decoded copy).

use super::extras::HeaderExtras;
use super::frames::{frame_geometries, has_functional_groups};
use super::prepared::{FileId, NoneRead, PreparedSlice, ReadAhead};
use super::stack::{build_stack, SliceHeader};
use super::{Dropped, FieldMask, SeriesInfo, SliceRef, Volume, VolumeError, AIR_HU};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{DecodedPixelData, PixelDecoder};
use ndarray::{Array3, Axis};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Below this many HU a value cannot be a real tissue or air measurement (air is −1000): it is the
/// scanner's out-of-field fill (−2000, −2048, −3024 …).
const OUT_OF_FIELD_BELOW_HU: f64 = -1100.0;

/// Options of [`load_series`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Fewer usable slices than this: refused.
    pub min_slices: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { min_slices: 10 }
    }
}

/// Load the series stored under `dir` (files in any sub-folder; non-DICOM files are dropped with a reason).
pub fn load_series(dir: &Path, opts: &LoadOptions) -> Result<Volume, VolumeError> {
    load_series_with(dir, opts, &NoneRead).map(|(v, _)| v)
}

/// [`load_series`] taking the slices `ahead` read while the series was still arriving, each only while
/// its file is still the one it was read from ([`super::prepared::FileId`]: a replaced instance is
/// read again). Returns the volume and how many of its slices came from `ahead`.
pub fn load_series_with(
    dir: &Path,
    opts: &LoadOptions,
    ahead: &dyn ReadAhead,
) -> Result<(Volume, usize), VolumeError> {
    let files = list_files(dir)?;
    let prepared: Vec<Option<std::sync::Arc<PreparedSlice>>> = files
        .par_iter()
        .map(|p| {
            ahead
                .get(p)
                .filter(|s| FileId::of(p).is_some_and(|id| id == s.id))
        })
        .collect();
    let read: Vec<Result<Vec<(SliceHeader, HeaderExtras)>, Dropped>> = files
        .par_iter()
        .zip(prepared.par_iter())
        .map(|(p, ready)| match ready {
            Some(s) => Ok(vec![(s.header.clone(), s.extras.clone())]),
            None => read_header(p),
        })
        .collect();
    let ready_by_path: HashMap<&Path, &PreparedSlice> = files
        .iter()
        .zip(prepared.iter())
        .filter_map(|(p, s)| s.as_deref().map(|s| (p.as_path(), s)))
        .collect();
    let mut headers = Vec::with_capacity(read.len());
    let mut extras = Vec::with_capacity(read.len());
    let mut dropped = Vec::new();
    for r in read {
        match r {
            Ok(frames) => {
                for (h, e) in frames {
                    headers.push(h);
                    extras.push(e);
                }
            }
            Err(d) => dropped.push(d),
        }
    }
    if headers.is_empty() {
        return Err(VolumeError::NoSlices {
            dir: dir.to_path_buf(),
            dropped: dropped.len(),
            example: dropped
                .first()
                .map(|d| d.reason.clone())
                .unwrap_or_else(|| "folder is empty".into()),
        });
    }
    let stack = build_stack(&headers, opts.min_slices)?;
    dropped.extend(stack.dropped);
    for d in &dropped {
        tracing::warn!(file = %d.path.display(), reason = %d.reason, "slice left out of the volume");
    }

    let shape = [stack.order.len(), stack.rows, stack.columns];
    // multi-frame files of the stack: each opened once, before the planes are filled
    let mut multi_paths: Vec<&Path> = stack
        .order
        .iter()
        .filter(|&&n| headers[n].frame.is_some())
        .map(|&n| headers[n].path.as_path())
        .collect();
    multi_paths.sort();
    multi_paths.dedup();
    let objects = multi_paths
        .iter()
        .map(|p| open_object(p))
        .collect::<Result<Vec<_>, _>>()?;
    let sources: HashMap<&Path, FrameSource<'_>> = multi_paths
        .iter()
        .copied()
        .zip(objects.iter())
        .map(|(p, obj)| Ok((p, frame_source(p, obj)?)))
        .collect::<Result<_, VolumeError>>()?;

    let mut hu = Array3::<i16>::zeros(shape);
    let mut field = FieldMask::new(shape);
    let results: Vec<Result<bool, VolumeError>> = hu
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(field.slices_mut().collect::<Vec<_>>())
        .zip(stack.order.par_iter())
        .map(|((mut plane, bits), &n)| {
            let dst = plane.as_slice_mut().ok_or_else(|| VolumeError::Decode {
                path: headers[n].path.clone(),
                reason: "volume plane not contiguous".into(),
            })?;
            let h = &headers[n];
            if let Some(ready) = ready_by_path
                .get(h.path.as_path())
                .filter(|r| h.frame.is_none() && r.fits(stack.rows, stack.columns))
            {
                dst.copy_from_slice(&ready.plane);
                bits.copy_from_slice(&ready.bits);
                return Ok(ready.any_out);
            }
            match (h.frame, sources.get(h.path.as_path())) {
                (Some(f), Some(src)) => decode_frame(
                    &h.path,
                    src,
                    f,
                    &extras[n],
                    stack.rows,
                    stack.columns,
                    dst,
                    bits,
                ),
                _ => decode_slice(&h.path, &extras[n], stack.rows, stack.columns, dst, bits),
            }
        })
        .collect();
    let mut any_out = false;
    for r in results {
        any_out |= r?;
    }
    let used = stack
        .order
        .iter()
        .filter(|&&n| {
            headers[n].frame.is_none()
                && ready_by_path
                    .get(headers[n].path.as_path())
                    .is_some_and(|r| r.fits(stack.rows, stack.columns))
        })
        .count();
    // multi-frame objects (and native ones' decoded copy) are not needed past this point
    drop(sources);
    drop(objects);

    let first = &extras[stack.order[0]];
    let slices = stack
        .order
        .iter()
        .map(|&n| SliceRef {
            path: headers[n].path.clone(),
            sop_class_uid: extras[n].sop_class_uid.clone(),
            sop_instance_uid: extras[n].sop_instance_uid.clone(),
            frame_number: headers[n].frame,
            position: {
                let p = headers[n].ipp.as_deref().unwrap_or(&[0.0, 0.0, 0.0]);
                [p[0], p[1], p[2]]
            },
        })
        .collect();
    tracing::debug!(
        slices = shape[0],
        multiframe_files = multi_paths.len(),
        rows = shape[1],
        columns = shape[2],
        dropped = dropped.len(),
        "volume loaded"
    );
    Ok((
        Volume {
            hu,
            geometry: stack.geometry,
            slices,
            series: first.series.clone(),
            out_of_field: any_out.then_some(field),
            dropped,
        },
        used,
    ))
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| VolumeError::Io {
            path: d.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| VolumeError::Io {
                path: d.clone(),
                source,
            })?;
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        })
        .unwrap_or_default()
}

fn floats(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i32> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i32>().ok())
}

/// The header of one file: one entry for a single-frame image, one per frame for an enhanced multi-frame
/// object (geometry and rescale from its functional groups).
fn read_header(path: &Path) -> Result<Vec<(SliceHeader, HeaderExtras)>, Dropped> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| Dropped {
            path: path.to_path_buf(),
            reason: format!("not a readable DICOM file: {e}"),
        })?;
    header_of(path, &obj)
}

/// [`read_header`] of an object already open.
fn header_of(
    path: &Path,
    obj: &DefaultDicomObject,
) -> Result<Vec<(SliceHeader, HeaderExtras)>, Dropped> {
    let image_type: Vec<String> = obj
        .element_opt(tags::IMAGE_TYPE)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_multi_str()
                .ok()
                .map(|v| v.iter().map(|s| s.trim().to_string()).collect())
        })
        .unwrap_or_default();
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
    let header = SliceHeader {
        path: path.to_path_buf(),
        series_instance_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        image_type,
        iop: floats(&obj, tags::IMAGE_ORIENTATION_PATIENT),
        ipp: floats(&obj, tags::IMAGE_POSITION_PATIENT),
        pixel_spacing: floats(&obj, tags::PIXEL_SPACING),
        rows: int(&obj, tags::ROWS).unwrap_or(0).max(0) as u32,
        columns: int(&obj, tags::COLUMNS).unwrap_or(0).max(0) as u32,
        frames,
        frame: None,
    };
    let padding = int(&obj, tags::PIXEL_PADDING_VALUE).map(|v| {
        let limit = int(&obj, tags::PIXEL_PADDING_RANGE_LIMIT).unwrap_or(v);
        (v.min(limit), v.max(limit))
    });
    // SOP Class / Instance UID from the data set, else from the file meta (some anonymisers blank one)
    let or_meta = |v: String, meta: &str| {
        if v.is_empty() {
            meta.trim_end_matches('\0').trim().to_string()
        } else {
            v
        }
    };
    let extras = HeaderExtras {
        sop_class_uid: or_meta(
            text(&obj, tags::SOP_CLASS_UID),
            obj.meta().media_storage_sop_class_uid(),
        ),
        sop_instance_uid: or_meta(
            text(&obj, tags::SOP_INSTANCE_UID),
            obj.meta().media_storage_sop_instance_uid(),
        ),
        slope: floats(&obj, tags::RESCALE_SLOPE)
            .and_then(|v| v.first().copied())
            .unwrap_or(1.0),
        intercept: floats(&obj, tags::RESCALE_INTERCEPT)
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0),
        padding,
        series: SeriesInfo {
            study_instance_uid: text(&obj, tags::STUDY_INSTANCE_UID),
            series_instance_uid: header.series_instance_uid.clone(),
            frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID),
            modality: text(&obj, tags::MODALITY),
            series_description: text(&obj, tags::SERIES_DESCRIPTION),
            series_number: text(&obj, tags::SERIES_NUMBER),
            patient_name: text(&obj, tags::PATIENT_NAME),
            patient_id: text(&obj, tags::PATIENT_ID),
            patient_birth_date: text(&obj, tags::PATIENT_BIRTH_DATE),
            patient_sex: text(&obj, tags::PATIENT_SEX),
            study_date: text(&obj, tags::STUDY_DATE),
            study_time: text(&obj, tags::STUDY_TIME),
            study_id: text(&obj, tags::STUDY_ID),
            accession_number: text(&obj, tags::ACCESSION_NUMBER),
            referring_physician_name: text(&obj, tags::REFERRING_PHYSICIAN_NAME),
            body_part_examined: text(&obj, tags::BODY_PART_EXAMINED),
            slice_thickness: floats(&obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        },
    };
    if !has_functional_groups(&obj) {
        // a single-frame slice (or a multi-frame without functional groups, which the stack drops)
        return Ok(vec![(header, extras)]);
    }
    let geometries = frame_geometries(&obj, frames).map_err(|reason| Dropped {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(geometries
        .into_iter()
        .map(|g| {
            let h = SliceHeader {
                iop: g.iop,
                ipp: g.ipp,
                pixel_spacing: g.pixel_spacing,
                frames: 1,
                frame: Some(g.number),
                ..header.clone()
            };
            let mut e = extras.clone();
            e.slope = g.slope.unwrap_or(1.0);
            e.intercept = g.intercept.unwrap_or(0.0);
            e.series.slice_thickness = e.series.slice_thickness.or(g.slice_thickness);
            (h, e)
        })
        .collect())
}

/// A multi-frame file's pixels: native 16-bit samples read in place (no copy of a large object), the
/// object to decode frame by frame from (encapsulated: each frame is compressed on its own, so frames
/// decode in parallel), or, for other native layouts, all frames decoded at once.
enum FrameSource<'a> {
    Words {
        words: &'a [u16],
        signed: bool,
        bits_stored: u32,
    },
    PerFrame(&'a DefaultDicomObject),
    Whole(DecodedPixelData<'a>),
}

/// A whole DICOM file (pixel data included) read into memory.
fn open_object(path: &Path) -> Result<DefaultDicomObject, VolumeError> {
    dicom_object::open_file(path).map_err(|e| VolumeError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn frame_source<'a>(
    path: &Path,
    obj: &'a DefaultDicomObject,
) -> Result<FrameSource<'a>, VolumeError> {
    let encapsulated = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .is_some_and(|e| matches!(e.value(), dicom_core::DicomValue::PixelSequence(_)));
    if encapsulated {
        return Ok(FrameSource::PerFrame(obj));
    }
    let native_words = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| match e.value() {
            dicom_core::DicomValue::Primitive(dicom_core::PrimitiveValue::U16(w)) => Some(&w[..]),
            _ => None,
        });
    if let Some(words) = native_words.filter(|_| {
        int(obj, tags::BITS_ALLOCATED) == Some(16) && int(obj, tags::SAMPLES_PER_PIXEL) == Some(1)
    }) {
        return Ok(FrameSource::Words {
            words,
            signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
            bits_stored: int(obj, tags::BITS_STORED).unwrap_or(16).clamp(1, 16) as u32,
        });
    }
    let px = obj.decode_pixel_data().map_err(|e| VolumeError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(FrameSource::Whole(px))
}

/// Decode frame `number` (1-based) of a multi-frame file to HU into `plane` (see [`decode_slice`]).
#[allow(clippy::too_many_arguments)]
fn decode_frame(
    path: &Path,
    src: &FrameSource<'_>,
    number: u32,
    ex: &HeaderExtras,
    rows: usize,
    columns: usize,
    plane: &mut [i16],
    bits: &mut [u64],
) -> Result<bool, VolumeError> {
    let dec = |e: dicom_pixeldata::Error| VolumeError::Decode {
        path: path.to_path_buf(),
        reason: format!("frame {number}: {e}"),
    };
    let index = number.saturating_sub(1);
    match src {
        FrameSource::Words {
            words,
            signed,
            bits_stored,
        } => {
            let n = rows * columns;
            let start = index as usize * n;
            let frame = words
                .get(start..start + n)
                .filter(|_| plane.len() >= n)
                .ok_or_else(|| VolumeError::Decode {
                    path: path.to_path_buf(),
                    reason: format!(
                        "frame {number}: {} samples of pixel data, frame ends at {}",
                        words.len(),
                        start + n
                    ),
                })?;
            let words = frame.iter().copied();
            Ok(fill_hu_words(
                words,
                *signed,
                *bits_stored,
                ex,
                &mut plane[..n],
                bits,
            ))
        }
        FrameSource::Whole(px) => to_hu(path, px, index, ex, rows, columns, plane, bits),
        FrameSource::PerFrame(obj) => {
            let px = obj.decode_pixel_data_frame(index).map_err(dec)?;
            to_hu(path, &px, 0, ex, rows, columns, plane, bits)
        }
    }
}

/// Decode one single-frame slice to HU straight into `plane`; out-of-field / padding pixels become
/// [`AIR_HU`] and set their bit in `bits`. Returns whether any pixel was out of field.
fn decode_slice(
    path: &Path,
    ex: &HeaderExtras,
    rows: usize,
    columns: usize,
    plane: &mut [i16],
    bits: &mut [u64],
) -> Result<bool, VolumeError> {
    let obj = open_object(path)?;
    decode_single(path, &obj, ex, rows, columns, plane, bits)
}

/// The pixels of a single-frame object to HU (see [`decode_slice`]): native 16-bit samples read in
/// place, anything else (encapsulated, 8-bit) through dicom-pixeldata's decode of the whole object.
fn decode_single(
    path: &Path,
    obj: &DefaultDicomObject,
    ex: &HeaderExtras,
    rows: usize,
    columns: usize,
    plane: &mut [i16],
    bits: &mut [u64],
) -> Result<bool, VolumeError> {
    match frame_source(path, obj)? {
        words @ FrameSource::Words { .. } => {
            decode_frame(path, &words, 1, ex, rows, columns, plane, bits)
        }
        FrameSource::Whole(px) => to_hu(path, &px, 0, ex, rows, columns, plane, bits),
        FrameSource::PerFrame(_) => {
            let px = obj.decode_pixel_data().map_err(|e| VolumeError::Decode {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            to_hu(path, &px, 0, ex, rows, columns, plane, bits)
        }
    }
}

/// Frame `frame` (0-based) of decoded pixel data to HU in `plane` (see [`decode_slice`]).
#[allow(clippy::too_many_arguments)]
fn to_hu(
    path: &Path,
    px: &DecodedPixelData<'_>,
    frame: u32,
    ex: &HeaderExtras,
    rows: usize,
    columns: usize,
    plane: &mut [i16],
    bits: &mut [u64],
) -> Result<bool, VolumeError> {
    let dec = |reason: String| VolumeError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let unsupported = |reason: String| VolumeError::UnsupportedPixels {
        path: path.to_path_buf(),
        reason,
    };
    if px.samples_per_pixel() != 1 {
        return Err(unsupported(format!(
            "{} samples per pixel (CT must be grey)",
            px.samples_per_pixel()
        )));
    }
    if px.rows() as usize != rows || px.columns() as usize != columns {
        return Err(unsupported(
            "decoded size differs from Rows / Columns".into(),
        ));
    }
    let n = rows * columns;
    let signed = matches!(
        px.pixel_representation(),
        dicom_pixeldata::PixelRepresentation::Signed
    );
    let bits_stored = px.bits_stored().clamp(1, 16) as u32;
    let bytes_per = match px.bits_allocated() {
        16 => 2,
        8 => 1,
        b => return Err(unsupported(format!("{b} bits allocated"))),
    };
    let data = if px.number_of_frames() <= 1 {
        px.data()
    } else {
        px.frame_data(frame)
            .map_err(|e| dec(format!("frame {}: {e}", frame + 1)))?
    };
    if data.len() < bytes_per * n || plane.len() < n {
        return Err(dec(format!(
            "{} bytes of pixel data for {n} pixels",
            data.len()
        )));
    }
    let plane = &mut plane[..n];
    Ok(match (bytes_per, signed) {
        (2, _) => fill_hu(
            data[..2 * n]
                .chunks_exact(2)
                .map(|w| sample16(u16::from_le_bytes([w[0], w[1]]), signed, bits_stored)),
            ex,
            plane,
            bits,
        ),
        (_, true) => fill_hu(data[..n].iter().map(|&v| v as i8 as i32), ex, plane, bits),
        (_, false) => fill_hu(data[..n].iter().map(|&v| v as i32), ex, plane, bits),
    })
}

/// A 16-bit stored sample as its value: the low `bits_stored` bits, sign-extended when signed.
fn sample16(v: u16, signed: bool, bits_stored: u32) -> i32 {
    if signed {
        let sh = 16 - bits_stored;
        (((v << sh) as i16) >> sh) as i32
    } else {
        (v & (((1u32 << bits_stored) - 1) as u16)) as i32
    }
}

/// [`fill_hu`] from 16-bit stored words (`bits_stored` of them used, `signed` per Pixel
/// Representation): one loop per signedness, so that the per-pixel work has no branch.
fn fill_hu_words(
    words: impl Iterator<Item = u16>,
    signed: bool,
    bits_stored: u32,
    ex: &HeaderExtras,
    plane: &mut [i16],
    bits: &mut [u64],
) -> bool {
    if signed {
        fill_hu(
            words.map(|w| sample16(w, true, bits_stored)),
            ex,
            plane,
            bits,
        )
    } else {
        fill_hu(
            words.map(|w| sample16(w, false, bits_stored)),
            ex,
            plane,
            bits,
        )
    }
}

/// Stored values (`values`, one per pixel of `plane`) to HU in `plane`; padding and out-of-field
/// pixels become [`AIR_HU`] with their bit set in `bits` (bit `p % 64` of word `p / 64`). Returns
/// whether any pixel was out of field.
///
/// Two branch-free passes: HU with out-of-field pixels marked [`OUT_MARK`] (no HU takes that value: HU
/// are clamped at [`AIR_HU`] and above), then 64 pixels at a time the marks become bits and
/// [`AIR_HU`]. This runs for every slice the read-ahead decodes while a series arrives (issue 16): a
/// branch and a read-modify-write of `bits` per pixel made it the largest user-space cost of receiving
/// a CT (0.56 ms per 512² slice; 0.22 ms this way).
fn fill_hu(
    values: impl Iterator<Item = i32>,
    ex: &HeaderExtras,
    plane: &mut [i16],
    bits: &mut [u64],
) -> bool {
    let n = plane.len().min(bits.len() * 64);
    let plane = &mut plane[..n];
    // an empty range when there is no padding value: `lo <= v <= hi` never holds
    let (lo, hi) = ex.padding.unwrap_or((1, 0));
    // integer fast path for the usual slope 1 / integer intercept: v + b is already the rounded HU,
    // so no float rounding per pixel (`f64::round` is a libm call: a quarter of the read-ahead's time)
    let int_intercept = (ex.slope == 1.0
        && ex.intercept.fract() == 0.0
        && ex.intercept.abs() <= INT_INTERCEPT_LIMIT)
        .then_some(ex.intercept as i32);
    if let Some(b) = int_intercept {
        // an integer below -1100.0 is one below -1100
        let cut = OUT_OF_FIELD_BELOW_HU.ceil() as i32;
        for (d, v) in plane.iter_mut().zip(values) {
            let hu = v + b;
            let out = (v >= lo) & (v <= hi) | (hu < cut);
            *d = if out {
                OUT_MARK
            } else {
                hu.clamp(i32::from(AIR_HU), i32::from(i16::MAX)) as i16
            };
        }
    } else {
        for (d, v) in plane.iter_mut().zip(values) {
            let hu = f64::from(v) * ex.slope + ex.intercept;
            let out = (v >= lo) & (v <= hi) | (hu < OUT_OF_FIELD_BELOW_HU);
            *d = if out {
                OUT_MARK
            } else {
                hu.round().clamp(f64::from(AIR_HU), f64::from(i16::MAX)) as i16
            };
        }
    }
    let mut any = false;
    for (chunk, word) in plane.chunks_mut(64).zip(bits.iter_mut()) {
        let mut m = 0u64;
        for (i, d) in chunk.iter().enumerate() {
            m |= u64::from(*d == OUT_MARK) << i;
        }
        if m != 0 {
            // the marks (below every HU) become air
            for d in chunk.iter_mut() {
                *d = (*d).max(AIR_HU);
            }
        }
        *word |= m;
        any |= m != 0;
    }
    any
}

/// An out-of-field pixel between the two passes of [`fill_hu`].
const OUT_MARK: i16 = i16::MIN;

/// Integer intercepts up to this size take the integer path of [`fill_hu`] (stored values are at most
/// 16 bits: the sum stays far inside `i32`); larger ones (never seen in CT) take the float path.
const INT_INTERCEPT_LIMIT: f64 = 1_000_000.0;

/// Read and decode one stored slice to HU. `Ok(None)`: not a single-frame image slice (a multi-frame
/// object, or a file the loader would drop), left to the load itself.
pub fn prepare_slice(path: &Path) -> Result<Option<PreparedSlice>, VolumeError> {
    let Some(id) = FileId::of(path) else {
        return Ok(None);
    };
    // one full read: the header from the object, the pixels from it in place (native 16-bit samples
    // are not copied), so that reading ahead costs about one parse of the file
    let Ok(obj) = dicom_object::open_file(path) else {
        return Ok(None);
    };
    prepare_object(path, id, obj, true)
}

/// [`prepare_slice`] from the stored file's bytes still in memory (the ingest journal's copy: no read
/// of the file). `id` is the identity of the file at `path` when it held exactly `part10` (taken by
/// the one writer right after placing it); a slice whose file changed since is never used, because the
/// loader compares `id` with the file it finds.
pub fn prepare_slice_bytes(
    path: &Path,
    id: FileId,
    part10: &[u8],
) -> Result<Option<PreparedSlice>, VolumeError> {
    let Some(body) = part10.get(128..) else {
        return Ok(None);
    };
    if let Some(slice) = prepare_native_bytes(path, id, body)? {
        return Ok(Some(slice));
    }
    let Ok(obj) = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(body)
    else {
        return Ok(None);
    };
    prepare_object(path, id, obj, false)
}

/// Transfer syntaxes whose native pixel words [`prepare_native_bytes`] reads in place: (UID, explicit VR).
const NATIVE_LITTLE_ENDIAN: [(&str, bool); 2] =
    [("1.2.840.10008.1.2.1", true), ("1.2.840.10008.1.2", false)];

/// The usual arriving CT slice — native 16-bit grey samples, little endian, Pixel Data the last element
/// — from its Part 10 bytes (`body`: from the "DICM" magic on) without parsing the pixel data: the
/// header is parsed up to Pixel Data and the samples are read where they lie in `body`. A full parse
/// copied the 512 kB of samples into the object first (a fresh allocation per slice: its page faults
/// and the copy were a third of the read-ahead's cost per slice). `Ok(None)`: not that case (another
/// transfer syntax, elements after Pixel Data, a multi-frame object): the caller parses it whole.
fn prepare_native_bytes(
    path: &Path,
    id: FileId,
    body: &[u8],
) -> Result<Option<PreparedSlice>, VolumeError> {
    let Ok(obj) = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(body)
    else {
        return Ok(None);
    };
    let ts = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    let Some(&(_, explicit)) = NATIVE_LITTLE_ENDIAN.iter().find(|(uid, _)| *uid == ts) else {
        return Ok(None);
    };
    if int(&obj, tags::BITS_ALLOCATED) != Some(16) || int(&obj, tags::SAMPLES_PER_PIXEL) != Some(1)
    {
        return Ok(None);
    }
    let signed = int(&obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let bits_stored = int(&obj, tags::BITS_STORED).unwrap_or(16).clamp(1, 16) as u32;
    prepare_with(path, id, &obj, false, |(plane, ex), rows, columns, bits| {
        let Some(samples) = trailing_pixel_data(body, rows * columns * 2, explicit) else {
            return Ok(None);
        };
        let words = samples
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        Ok(Some(fill_hu_words(
            words,
            signed,
            bits_stored,
            ex,
            plane,
            bits,
        )))
    })
}

/// The last `len` bytes of `body` when they are the value of a Pixel Data element (7FE0,0010) of exactly
/// that length that ends the data set: its element header (explicit VR: tag, `OW` / `OB`, two reserved
/// bytes, 32-bit length; implicit VR: tag, 32-bit length) must lie right before them.
fn trailing_pixel_data(body: &[u8], len: usize, explicit: bool) -> Option<&[u8]> {
    let start = body.len().checked_sub(len)?;
    let head = body.get(start.checked_sub(if explicit { 12 } else { 8 })?..start)?;
    let (tag, rest) = head.split_at(4);
    if tag != [0xE0, 0x7F, 0x10, 0x00] {
        return None;
    }
    let length = if explicit {
        if !matches!(&rest[..2], b"OW" | b"OB") || rest[2..4] != [0, 0] {
            return None;
        }
        &rest[4..8]
    } else {
        rest
    };
    (u32::from_le_bytes(length.try_into().ok()?) as usize == len).then(|| &body[start..])
}

/// The slice of a parsed single-frame object; `recheck`: compare the file's identity with `id` again
/// after decoding (the object was read from the file itself, which may have been replaced meanwhile).
fn prepare_object(
    path: &Path,
    id: FileId,
    obj: DefaultDicomObject,
    recheck: bool,
) -> Result<Option<PreparedSlice>, VolumeError> {
    prepare_with(
        path,
        id,
        &obj,
        recheck,
        |(plane, ex), rows, columns, bits| {
            decode_single(path, &obj, ex, rows, columns, plane, bits).map(Some)
        },
    )
}

/// The decoded plane and the header extras its decoder needs.
type PlaneAndExtras<'a> = (&'a mut [i16], &'a HeaderExtras);

/// A single-frame object's slice: its header from `obj`, its samples to HU by `decode` (into the
/// plane and the out-of-field bits; `Ok(None)`: it cannot, nothing is prepared).
fn prepare_with(
    path: &Path,
    id: FileId,
    obj: &DefaultDicomObject,
    recheck: bool,
    decode: impl FnOnce(
        PlaneAndExtras<'_>,
        usize,
        usize,
        &mut [u64],
    ) -> Result<Option<bool>, VolumeError>,
) -> Result<Option<PreparedSlice>, VolumeError> {
    let Ok(mut headers) = header_of(path, obj) else {
        return Ok(None);
    };
    if headers.len() != 1 || headers[0].0.frame.is_some() || headers[0].0.frames != 1 {
        return Ok(None);
    }
    let (header, extras) = headers.remove(0);
    let (rows, columns) = (header.rows as usize, header.columns as usize);
    if rows == 0 || columns == 0 {
        return Ok(None);
    }
    let mut plane = vec![0i16; rows * columns];
    let mut bits = vec![0u64; (rows * columns).div_ceil(64)];
    let Some(any_out) = decode((&mut plane, &extras), rows, columns, &mut bits)? else {
        return Ok(None);
    };
    // the file may have been replaced while it was read: keep the slice only if it did not change
    if recheck && FileId::of(path) != Some(id) {
        return Ok(None);
    }
    Ok(Some(PreparedSlice {
        id,
        header,
        extras,
        plane,
        bits,
        any_out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-pixel rule of `fill_hu`, written plainly (one branch per pixel).
    fn reference(raw: &[i32], ex: &HeaderExtras) -> (Vec<i16>, Vec<u64>, bool) {
        let mut plane = vec![0i16; raw.len()];
        let mut bits = vec![0u64; raw.len().div_ceil(64)];
        let mut any = false;
        for (p, &v) in raw.iter().enumerate() {
            let padding = ex.padding.is_some_and(|(lo, hi)| v >= lo && v <= hi);
            let hu = f64::from(v) * ex.slope + ex.intercept;
            if padding || hu < OUT_OF_FIELD_BELOW_HU {
                plane[p] = AIR_HU;
                bits[p / 64] |= 1 << (p % 64);
                any = true;
            } else {
                plane[p] = hu.round().clamp(f64::from(AIR_HU), f64::from(i16::MAX)) as i16;
            }
        }
        (plane, bits, any)
    }

    fn extras(slope: f64, intercept: f64, padding: Option<(i32, i32)>) -> HeaderExtras {
        HeaderExtras {
            sop_class_uid: String::new(),
            sop_instance_uid: String::new(),
            slope,
            intercept,
            padding,
            series: SeriesInfo::default(),
        }
    }

    #[test]
    fn branch_free_fill_matches_the_plain_rule() {
        // a deterministic spread of stored values: padding, below the cut, air, tissue, bone, the top
        let mut x = 12345u64;
        let raw: Vec<i32> = (0..1000)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match i % 7 {
                    0 => -2000,
                    1 => 63536 - 65536,
                    _ => ((x >> 33) % 5000) as i32 - 1100,
                }
            })
            .collect();
        for ex in [
            extras(1.0, -1024.0, None),
            extras(1.0, 0.0, Some((-2000, -2000))),
            extras(1.0, -1024.0, Some((-2100, -1990))),
            extras(0.5, -1024.25, None),
            extras(2.0, 10.0, Some((-2000, -2000))),
            extras(1.0, 40_000.0, None),
        ] {
            // 1000 pixels: the last word is partly used
            let (want_plane, want_bits, want_any) = reference(&raw, &ex);
            let mut plane = vec![7i16; raw.len()];
            let mut bits = vec![0u64; raw.len().div_ceil(64)];
            let any = fill_hu(raw.iter().copied(), &ex, &mut plane, &mut bits);
            assert_eq!(plane, want_plane, "{ex:?}");
            assert_eq!(bits, want_bits, "{ex:?}");
            assert_eq!(any, want_any, "{ex:?}");
        }
    }

    #[test]
    fn a_slice_from_memory_decodes_as_from_its_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/chest-ct-crop");
        let Some(path) = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_file())
        else {
            panic!("shared chest data missing at {}", dir.display());
        };
        let from_file = prepare_slice(&path).expect("read").expect("a slice");
        let bytes = std::fs::read(&path).expect("bytes");
        let id = FileId::of(&path).expect("id");
        let from_memory = prepare_slice_bytes(&path, id, &bytes)
            .expect("parse")
            .expect("a slice");
        assert_eq!(from_memory.plane, from_file.plane);
        assert_eq!(from_memory.bits, from_file.bits);
        assert_eq!(from_memory.any_out, from_file.any_out);
        assert_eq!(from_memory.id, from_file.id);
        assert_eq!(
            format!("{:?}", from_memory.header),
            format!("{:?}", from_file.header)
        );
        // the in-place reading is what ran (the shared slices are native 16-bit, Pixel Data last)
        let in_place = prepare_native_bytes(&path, id, &bytes[128..])
            .expect("parse")
            .expect("read in place");
        assert_eq!(in_place.plane, from_file.plane);
        // an element after Pixel Data (trailing padding): not read in place, parsed whole, the same
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[
            0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert!(prepare_native_bytes(&path, id, &padded[128..])
            .expect("parse")
            .is_none());
        let whole = prepare_slice_bytes(&path, id, &padded)
            .expect("parse")
            .expect("a slice");
        assert_eq!(whole.plane, from_file.plane);
        assert_eq!(whole.bits, from_file.bits);
        // not a Part 10 file: nothing, no error
        assert!(prepare_slice_bytes(&path, id, &bytes[..100])
            .expect("no error")
            .is_none());
    }

    #[test]
    fn trailing_pixel_data_needs_its_element_header_right_before_it() {
        let samples = [1u8, 2, 3, 4];
        let explicit = [
            &[9u8, 9][..],
            &[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 4, 0, 0, 0],
            &samples,
        ]
        .concat();
        assert_eq!(trailing_pixel_data(&explicit, 4, true), Some(&samples[..]));
        // another length, another VR, another tag, too short: not Pixel Data of that length
        assert_eq!(trailing_pixel_data(&explicit, 2, true), None);
        let mut other_vr = explicit.clone();
        other_vr[6..8].copy_from_slice(b"UN");
        assert_eq!(trailing_pixel_data(&other_vr, 4, true), None);
        let mut other_tag = explicit.clone();
        other_tag[2] = 0x08;
        assert_eq!(trailing_pixel_data(&other_tag, 4, true), None);
        assert_eq!(trailing_pixel_data(&explicit[4..], 4, true), None);
        let implicit = [&[0xE0u8, 0x7F, 0x10, 0x00, 4, 0, 0, 0][..], &samples].concat();
        assert_eq!(trailing_pixel_data(&implicit, 4, false), Some(&samples[..]));
        assert_eq!(trailing_pixel_data(&implicit, 4, true), None);
    }
}
