//! Slices read ahead of the load: while a series is still arriving, each stored single-frame slice can be
//! read and decoded to HU at once ([`super::load::prepare_slice`]), so that when the series completes only the
//! segmentation is left. [`super::load::load_series_with`] takes such a slice in place of reading its
//! file only while the file is still the one it was read from: same device, inode, size and
//! modification time ([`FileId`]). An instance received again with new content is renamed over the old
//! file (a new inode), so a replaced slice is always read again, never fed to a pipeline stale.
//!
//! Multi-frame objects are not read ahead (they arrive as one instance: nothing to overlap).

use super::extras::HeaderExtras;
use super::stack::SliceHeader;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// The identity of a file's content as the file system tells it, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    /// The identity of the file at `path` now (`None`: it cannot be read).
    pub fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// One slice read and decoded ahead of the load.
#[derive(Debug, Clone)]
pub struct PreparedSlice {
    pub(super) id: FileId,
    pub(super) header: SliceHeader,
    pub(super) extras: HeaderExtras,
    /// HU, `rows × columns`, row-major.
    pub(super) plane: Vec<i16>,
    /// Out-of-field bits in [`super::FieldMask`]'s per-slice layout.
    pub(super) bits: Vec<u64>,
    pub(super) any_out: bool,
}

impl PreparedSlice {
    /// Memory it holds (bytes), for a read-ahead budget.
    pub fn bytes(&self) -> usize {
        self.plane.len() * 2 + self.bits.len() * 8 + 512
    }

    /// Whether it was decoded for a stack of this matrix.
    pub(super) fn fits(&self, rows: usize, columns: usize) -> bool {
        self.header.rows as usize == rows
            && self.header.columns as usize == columns
            && self.plane.len() == rows * columns
    }
}

/// Where [`super::load::load_series_with`] looks for slices read ahead, by file path.
pub trait ReadAhead: Sync {
    fn get(&self, path: &Path) -> Option<Arc<PreparedSlice>>;
}

/// No slice read ahead.
pub struct NoneRead;

impl ReadAhead for NoneRead {
    fn get(&self, _: &Path) -> Option<Arc<PreparedSlice>> {
        None
    }
}

impl ReadAhead for std::collections::HashMap<std::path::PathBuf, Arc<PreparedSlice>> {
    fn get(&self, path: &Path) -> Option<Arc<PreparedSlice>> {
        std::collections::HashMap::get(self, path).cloned()
    }
}
