//! Series → [`Volume`]: the CT slices of one series as a 3D Hounsfield-unit array with its geometry.
//!
//! This room owns everything between "a folder of DICOM files" and "a regular voxel grid": reading the
//! headers, choosing the slices that form one stack (and saying why the others were dropped), refusing
//! stacks that cannot be a volume with a reason a PACS administrator understands, decoding the pixel data
//! whatever the transfer syntax (via `dicom-pixeldata`), rescaling to HU and marking out-of-field pixels.
//! Segmenters only ever see a [`Volume`]; they never touch DICOM files.

mod error;
mod extras;
pub mod frames;
pub mod geometry;
mod load;
pub mod prepared;
mod stack;

pub use error::VolumeError;
pub use geometry::{Geometry, Vec3};
pub use load::{load_series, load_series_with, prepare_slice, prepare_slice_bytes, LoadOptions};
pub use prepared::{FileId, PreparedSlice, ReadAhead};

use ndarray::Array3;
use std::path::PathBuf;

/// HU value written for out-of-field and padding pixels: outside air.
pub const AIR_HU: i16 = -1024;

/// A CT series as a regular voxel grid.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Hounsfield units, indexed `[slice k, row j, column i]`, slices sorted along the slice normal.
    /// Out-of-field / padding pixels hold [`AIR_HU`] and are flagged in [`Volume::out_of_field`].
    pub hu: Array3<i16>,
    /// Index → patient (LPS mm) geometry.
    pub geometry: Geometry,
    /// One entry per slice `k`, in the same order as the array (a frame of a multi-frame source is a
    /// slice with its frame number).
    pub slices: Vec<SliceRef>,
    /// Identity of the series and the attributes a derived object copies from it.
    pub series: SeriesInfo,
    /// Pixels that lie outside the reconstructed field of view or carry the Pixel Padding Value; `None`
    /// when there are none.
    pub out_of_field: Option<FieldMask>,
    /// Files that were read but left out of the stack, with the reason.
    pub dropped: Vec<Dropped>,
}

impl Volume {
    /// `[slices, rows, columns]`.
    pub fn shape(&self) -> [usize; 3] {
        let s = self.hu.shape();
        [s[0], s[1], s[2]]
    }

    /// Whether voxel `[k, j, i]` lies outside the field of view (padding).
    pub fn is_out_of_field(&self, k: usize, j: usize, i: usize) -> bool {
        self.out_of_field.as_ref().is_some_and(|m| m.get(k, j, i))
    }
}

/// One source slice of a volume.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRef {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// The frame number (1-based) when the slice is a frame of a multi-frame object, `None` for a
    /// single-frame image: with the SOP Instance UID it identifies the source (ReferencedFrameNumber).
    pub frame_number: Option<u32>,
    /// ImagePositionPatient (LPS mm).
    pub position: Vec3,
}

/// A file that was not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub path: PathBuf,
    pub reason: String,
}

/// Identity and patient/study attributes of the source series (empty strings where absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesInfo {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub series_description: String,
    pub series_number: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub body_part_examined: String,
    /// SliceThickness of the source, when given.
    pub slice_thickness: Option<f64>,
}

/// A bit per voxel, slice by slice (each slice starts on a 64-bit word).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMask {
    shape: [usize; 3],
    words_per_slice: usize,
    words: Vec<u64>,
}

impl FieldMask {
    pub fn new(shape: [usize; 3]) -> Self {
        let words_per_slice = (shape[1] * shape[2]).div_ceil(64);
        FieldMask {
            shape,
            words_per_slice,
            words: vec![0; words_per_slice * shape[0]],
        }
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn get(&self, k: usize, j: usize, i: usize) -> bool {
        let p = j * self.shape[2] + i;
        self.words[k * self.words_per_slice + p / 64] >> (p % 64) & 1 == 1
    }

    pub fn set(&mut self, k: usize, j: usize, i: usize) {
        let p = j * self.shape[2] + i;
        self.words[k * self.words_per_slice + p / 64] |= 1 << (p % 64);
    }

    /// The words of slice `k`; bit `p` is pixel `p = j·columns + i`.
    pub fn slice_words(&self, k: usize) -> &[u64] {
        &self.words[k * self.words_per_slice..(k + 1) * self.words_per_slice]
    }

    pub(crate) fn slices_mut(&mut self) -> std::slice::ChunksMut<'_, u64> {
        self.words.chunks_mut(self.words_per_slice)
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_mask_sets_and_gets_bits_per_slice() {
        let mut m = FieldMask::new([3, 5, 13]);
        m.set(1, 4, 12);
        m.set(2, 0, 0);
        assert!(m.get(1, 4, 12) && m.get(2, 0, 0));
        assert!(!m.get(0, 4, 12) && !m.get(1, 4, 11));
        assert_eq!(m.count(), 2);
    }
}
