//! Instance files on disk: the streaming writer that receives a data set fragment by fragment into a
//! temporary file, and the commit that makes it durable and visible.
//!
//! Layout: `<root>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm` (Part 10 files with the transfer syntax
//! as received), temporary files in `<root>/.incoming/<node>/` (one folder per receiver, so receivers
//! sharing a store never touch each other's files in progress). The commit order is what makes a
//! success status safe to send: write → fdatasync → rename into place → fsync of the directory (and of
//! any directory created on the way). A crash at any point leaves either no file or a whole one in the
//! store; a receiver deletes the leftovers in its own temporary folder at start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

use super::uid;

/// Where and how a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "storage is below its free-space reserve ({free_mb} MB free, {reserve_mb} MB reserved)"
    )]
    LowSpace { free_mb: u64, reserve_mb: u64 },
    #[error("invalid UID `{uid}`: {reason}")]
    BadUid { uid: String, reason: uid::UidError },
    #[error("could not write the file meta group: {0}")]
    Meta(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The file meta information of an instance being received (from the command set and the
/// presentation context, before the data set arrives).
#[derive(Debug, Clone)]
pub struct IncomingMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub source_ae: String,
}

/// The on-disk store of instance files.
#[derive(Debug)]
pub struct InstanceStore {
    root: PathBuf,
    incoming: PathBuf,
    /// This receiver's folder name (its sanitised node name) under `.incoming` and `.journal`.
    folder: String,
    reserve_mb: u64,
}

impl InstanceStore {
    /// Open (creating) the store at `root` for receiver `node`, removing the temporary files a crash of
    /// this receiver left behind. `reserve_mb`: refuse new instances when less free space than this
    /// remains.
    pub fn open(root: &Path, node: &str, reserve_mb: u64) -> Result<InstanceStore, StoreError> {
        fs::create_dir_all(root).map_err(io_err("create", root))?;
        let folder: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let folder = if folder.trim_matches('.').is_empty() {
            "node".to_string()
        } else {
            folder
        };
        let incoming = root.join(".incoming").join(&folder);
        fs::create_dir_all(&incoming).map_err(io_err("create", &incoming))?;
        for entry in fs::read_dir(&incoming)
            .map_err(io_err("read", &incoming))?
            .flatten()
        {
            let p = entry.path();
            if p.is_file() {
                tracing::warn!(path = %p.display(), "removing a partial file left by an interrupted receive");
                let _ = fs::remove_file(&p);
            }
        }
        sync_dir(&incoming)?;
        if let Some(parent) = incoming.parent() {
            sync_dir(parent)?;
        }
        sync_dir(root)?;
        Ok(InstanceStore {
            root: root.to_path_buf(),
            incoming,
            folder,
            reserve_mb,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This receiver's folder name under `.incoming` (and `.journal`).
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// The final path of an instance. Only validated UIDs are accepted.
    pub fn path_for(&self, study: &str, series: &str, sop: &str) -> Result<PathBuf, StoreError> {
        for u in [study, series, sop] {
            uid::validate(u).map_err(|reason| StoreError::BadUid {
                uid: u.to_string(),
                reason,
            })?;
        }
        Ok(self
            .root
            .join(study)
            .join(series)
            .join(format!("{sop}.dcm")))
    }

    /// `path` relative to the storage directory, as the index records it.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Start receiving an instance: a temporary file with preamble, `DICM` and the file meta group.
    pub fn begin(&self, meta: &IncomingMeta) -> Result<IncomingFile, StoreError> {
        self.check_space()?;
        let (mut file, path) = self.create_part()?;
        let header = file_meta_bytes(meta)?;
        file.write_all(&header).map_err(io_err("write", &path))?;
        Ok(IncomingFile {
            file: Some(file),
            path,
            hasher: Xxh3::new(),
            dataset_bytes: 0,
            unflushed: 0,
            failed: None,
        })
    }

    /// Start receiving an instance into memory (the journal's filing path): the Part 10 preamble and
    /// file meta group now, the data set as it arrives. Past `limit_bytes` the caller spills it into a
    /// temporary file ([`MemoryFile::spill`]) and files it the direct way.
    pub fn begin_memory(
        &self,
        meta: &IncomingMeta,
        limit_bytes: usize,
    ) -> Result<MemoryFile, StoreError> {
        self.check_space()?;
        let mut bytes = file_meta_bytes(meta)?;
        // most instances fit (a 512² CT slice is ~0.5 MB): no regrowth while it arrives
        bytes.reserve(limit_bytes.min(1 << 20));
        Ok(MemoryFile {
            meta_len: bytes.len(),
            bytes,
            hasher: Xxh3::new(),
            limit_bytes,
            meta: meta.clone(),
        })
    }

    /// Write `bytes` to a new temporary file (not yet durable: the caller syncs a batch of them, then
    /// [`InstanceStore::place`]s each). Used by the journal's materialiser.
    pub fn stage(&self, bytes: &[u8]) -> Result<Staged, StoreError> {
        let (mut file, path) = self.create_part()?;
        if let Err(e) = file.write_all(bytes) {
            let _ = fs::remove_file(&path);
            return Err(io_err("write", &path)(e));
        }
        start_writeback(&file);
        Ok(Staged { file, path })
    }

    /// Rename a staged (and synced) file into place, creating its directory durably when missing; the
    /// caller fsyncs the directory once for all the files of its batch.
    pub fn place(&self, staged: Staged, final_path: &Path) -> Result<(), StoreError> {
        let Staged { file, path } = staged;
        drop(file);
        let dir = final_path.parent().unwrap_or(&self.root);
        self.ensure_dir(dir)?;
        fs::rename(&path, final_path).map_err(io_err("rename into", final_path))
    }

    /// A new temporary file with a random name in this node's incoming directory.
    fn create_part(&self) -> Result<(File, PathBuf), StoreError> {
        let name = format!(
            "{:016x}{:016x}.part",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let path = self.incoming.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok((file, path))
    }

    fn check_space(&self) -> Result<(), StoreError> {
        if self.reserve_mb == 0 {
            return Ok(());
        }
        if let Some(free_mb) = free_mb(&self.root) {
            if free_mb < self.reserve_mb {
                return Err(StoreError::LowSpace {
                    free_mb,
                    reserve_mb: self.reserve_mb,
                });
            }
        }
        Ok(())
    }

    /// Make a received file durable at `final_path` (blocking: run it off the async runtime).
    /// An existing file at that path is replaced atomically.
    pub fn commit(&self, file: ClosedFile, final_path: &Path) -> Result<(), StoreError> {
        file.sync()?;
        self.publish(file, final_path)
    }

    /// Second half of [`InstanceStore::commit`] for a file already [`ClosedFile::sync`]ed: rename it
    /// into place and make the directory entry durable.
    pub fn publish(&self, file: ClosedFile, final_path: &Path) -> Result<(), StoreError> {
        drop(file.file);
        let dir = final_path.parent().unwrap_or(&self.root);
        self.ensure_dir(dir)?;
        fs::rename(&file.path, final_path).map_err(io_err("rename into", final_path))?;
        super::crashpoint::reached(super::crashpoint::Step::Renamed);
        sync_dir(dir)
    }

    /// Create `dir` (below the root) if missing, making each new directory entry durable.
    fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if parent != self.root && parent.starts_with(&self.root) {
                self.ensure_dir(parent)?;
            }
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err("create", dir)(e)),
        }
        sync_dir(dir.parent().unwrap_or(&self.root))
    }
}

/// A file staged by [`InstanceStore::stage`]: written, not yet synced nor in place.
pub struct Staged {
    file: File,
    pub path: PathBuf,
}

impl Staged {
    /// Flush the file's data to disk (fdatasync).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err("fsync", &self.path))
    }

    /// Remove it (a batch that failed before its renames).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// An instance being received into memory for the journal: the whole Part 10 file (preamble, file meta,
/// data set), hashed as it arrives like [`IncomingFile`].
pub struct MemoryFile {
    bytes: Vec<u8>,
    meta_len: usize,
    hasher: Xxh3,
    limit_bytes: usize,
    meta: IncomingMeta,
}

/// A completely received in-memory instance.
pub struct ClosedMemory {
    /// The Part 10 file as it will be stored.
    pub bytes: Vec<u8>,
    /// xxh3-128 of the data set bytes (not the meta group), hex.
    pub content_hash: String,
    pub dataset_bytes: u64,
}

impl MemoryFile {
    /// Append one P-DATA fragment of the data set; `false` when it would pass the limit (nothing
    /// appended: spill, then write the fragment to the file).
    pub fn write(&mut self, data: &[u8]) -> bool {
        if self.bytes.len() + data.len() > self.limit_bytes {
            return false;
        }
        self.hasher.update(data);
        self.bytes.extend_from_slice(data);
        true
    }

    /// Move what was received so far into a temporary file, to go on the direct way.
    pub fn spill(self, store: &InstanceStore) -> Result<IncomingFile, StoreError> {
        let mut file = store.begin(&self.meta)?;
        file.write(&self.bytes[self.meta_len..]);
        Ok(file)
    }

    pub fn close(self) -> ClosedMemory {
        ClosedMemory {
            dataset_bytes: (self.bytes.len() - self.meta_len) as u64,
            content_hash: format!("{:032x}", self.hasher.digest128()),
            bytes: self.bytes,
        }
    }
}

/// A file being received. Write errors are remembered (the rest of the data set is still drained from
/// the association) and reported at [`IncomingFile::close`].
pub struct IncomingFile {
    file: Option<File>,
    path: PathBuf,
    hasher: Xxh3,
    dataset_bytes: u64,
    /// Bytes written since writeback was last started.
    unflushed: u64,
    failed: Option<io::Error>,
}

/// Start the kernel's writeback every this many bytes, so that the fdatasync before the success status
/// finds most of the file already on its way to the disk.
const WRITEBACK_CHUNK: u64 = 256 * 1024;

/// Ask the kernel to start writing the file's dirty pages out, without waiting (Linux
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`; durability still comes from the fdatasync at commit).
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open file descriptor; offset 0 / nbytes 0 means the whole file.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A completely received file, not yet durable.
pub struct ClosedFile {
    file: File,
    pub path: PathBuf,
    /// xxh3-128 of the data set bytes (not the meta group), hex.
    pub content_hash: String,
    pub dataset_bytes: u64,
}

impl IncomingFile {
    /// Append one P-DATA fragment of the data set.
    pub fn write(&mut self, data: &[u8]) {
        self.dataset_bytes += data.len() as u64;
        if self.failed.is_some() {
            return;
        }
        self.hasher.update(data);
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write_all(data) {
                self.failed = Some(e);
                return;
            }
            self.unflushed += data.len() as u64;
            if self.unflushed >= WRITEBACK_CHUNK {
                start_writeback(f);
                self.unflushed = 0;
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finish receiving; an earlier write error surfaces here (and the temporary file is removed).
    pub fn close(mut self) -> Result<ClosedFile, StoreError> {
        let file = self.file.take();
        if let Some(e) = self.failed.take() {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::Io {
                what: "write",
                path: self.path.clone(),
                source: e,
            });
        }
        let file = file.ok_or_else(|| StoreError::Meta("file already closed".into()))?;
        Ok(ClosedFile {
            file,
            path: std::mem::take(&mut self.path),
            content_hash: format!("{:032x}", self.hasher.digest128()),
            dataset_bytes: self.dataset_bytes,
        })
    }
}

impl Drop for IncomingFile {
    /// An instance abandoned mid-receive (aborted association) leaves nothing behind.
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() && self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl ClosedFile {
    /// Flush the file's data to disk (fdatasync).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err("fsync", &self.path))
    }

    /// Discard (rejected or duplicate instance).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Preamble, magic and the file meta group (PS3.10 §7.1) for a received instance.
fn file_meta_bytes(meta: &IncomingMeta) -> Result<Vec<u8>, StoreError> {
    let table = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(meta.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(meta.sop_instance_uid.as_str())
        .transfer_syntax(meta.transfer_syntax.as_str())
        .implementation_class_uid(crate::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(meta.source_ae.trim())
        .build()
        .map_err(|e| StoreError::Meta(e.to_string()))?;
    let mut out = Vec::with_capacity(400);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    table
        .write(&mut out)
        .map_err(|e| StoreError::Meta(e.to_string()))?;
    Ok(out)
}

/// The content hash of a stored instance file, computed like [`IncomingFile`] does while receiving: xxh3
/// (128 bit) of the data set bytes after the file meta group. Used when a file is found in the store
/// without its index row, so that the sender's retry of it is recognised as a duplicate.
pub fn stored_content_hash(path: &Path) -> Result<(String, u64), StoreError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let bad = || StoreError::Meta(format!("{}: no Part 10 file meta group", path.display()));
    // preamble (128) + "DICM" + (0002,0000) UL: tag 4, VR 2, length 2, value 4
    if bytes.len() < 144 || &bytes[128..132] != b"DICM" || bytes[132..136] != [2, 0, 0, 0] {
        return Err(bad());
    }
    let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
    let start = 144usize
        .checked_add(group_len)
        .filter(|s| *s <= bytes.len())
        .ok_or_else(bad)?;
    let mut h = Xxh3::new();
    h.update(&bytes[start..]);
    Ok((
        format!("{:032x}", h.digest128()),
        (bytes.len() - start) as u64,
    ))
}

/// fsync a directory so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// (free, total) space of the file system holding `path`, in MB (the console's disk panel).
pub fn disk_mb(path: &Path) -> Option<(u64, u64)> {
    let (total, free) = disk_space(path)?;
    Some((free / (1024 * 1024), total / (1024 * 1024)))
}

/// Size and free space (available to us) of the file system holding `path`, in bytes.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((
        (st.f_blocks as u64).saturating_mul(frsize),
        (st.f_bavail as u64).saturating_mul(frsize),
    ))
}

/// Free space of the file system holding `path`, in MB.
fn free_mb(path: &Path) -> Option<u64> {
    disk_space(path).map(|(_, free)| free / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> IncomingMeta {
        IncomingMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: "1.2.3.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            source_ae: "STORESCU".into(),
        }
    }

    #[test]
    fn commit_moves_a_whole_file_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = InstanceStore::open(dir.path(), "rx", 0).unwrap();
        let mut f = store.begin(&meta()).unwrap();
        f.write(b"\x08\x00\x16\x00");
        f.write(b"more");
        let closed = f.close().unwrap();
        assert_eq!(closed.dataset_bytes, 8);
        let tmp = closed.path.clone();
        let dest = store.path_for("1.2", "1.2.3", "1.2.3.4").unwrap();
        store.commit(closed, &dest).unwrap();
        assert!(!tmp.exists());
        let bytes = fs::read(&dest).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        assert!(bytes.ends_with(b"more"));
    }

    #[test]
    fn abandoned_and_leftover_files_disappear() {
        let dir = tempfile::tempdir().unwrap();
        let store = InstanceStore::open(dir.path(), "rx", 0).unwrap();
        let f = store.begin(&meta()).unwrap();
        let p = f.path().to_path_buf();
        assert!(p.exists());
        drop(f);
        assert!(!p.exists());
        let mine = dir.path().join(".incoming").join("rx").join("x.part");
        fs::write(&mine, b"partial").unwrap();
        // another receiver sharing the store: its files in progress are not ours to delete
        let other = InstanceStore::open(dir.path(), "other:11112", 0).unwrap();
        let theirs = other.begin(&meta()).unwrap();
        let _store = InstanceStore::open(dir.path(), "rx", 0).unwrap();
        assert!(!mine.exists());
        assert!(
            theirs.path().exists(),
            "another receiver's file in progress kept"
        );
    }

    #[test]
    fn paths_only_from_valid_uids() {
        let dir = tempfile::tempdir().unwrap();
        let store = InstanceStore::open(dir.path(), "rx", 0).unwrap();
        assert!(store.path_for("1.2", "../x", "1.2.3").is_err());
        assert!(store.path_for("", "1.2", "1.2.3").is_err());
    }

    #[test]
    fn reserve_refuses_new_instances() {
        let dir = tempfile::tempdir().unwrap();
        let store = InstanceStore::open(dir.path(), "rx", u64::MAX / 2).unwrap();
        assert!(matches!(
            store.begin(&meta()),
            Err(StoreError::LowSpace { .. })
        ));
    }
}
