//! The ingest journal: an append-only log that makes a received instance durable with **one** flush,
//! shared by every association that appended before it (group commit), so that the C-STORE success can
//! be sent before the instance's file and index row exist ([`super::materialise`] makes them after).
//!
//! Layout: a ring of `segments` files of `segment_bytes` each in `<storage>/.journal/<node>/`
//! (`seg-NN.jnl`), created zero-filled and fsync'd once, so that an fdatasync of a segment flushes data
//! only (no size or extent change to commit), and a `checkpoint` file. A position in the journal is a
//! log sequence number (LSN): bytes appended since the journal was created; LSN `l` lives in segment
//! `(l / segment_bytes) % segments` at offset `l % segment_bytes`. A record never spans two segments:
//! the tail of a segment too short for the next record gets a pad record (or nothing, when even a
//! header does not fit) and the record goes to the next one.
//!
//! A record: a 32-byte header (magic, kind, epoch, body length, its own LSN, CRC-32 of header and
//! body), the body, padding to 8 bytes. Reading the journal back (at start) walks from the checkpoint
//! and stops at the first record whose magic, LSN or CRC does not match, or whose epoch is older than
//! the one before it: the torn last record of a crash (never acknowledged: its flush did not return),
//! an older record left in a recycled segment, or one written before a restart beyond the point where
//! that restart resumed. Each start bumps the epoch, so bytes from before it are never taken for new.
//!
//! Group commit (leader / follower): appends write into the page cache under one lock, in LSN order;
//! `commit(lsn)` returns once an fdatasync that started after that record was written has returned.
//! The first committer finding no flush running becomes the leader and flushes every segment dirtied so
//! far; the others wait for it and find themselves covered, or lead the next flush.
//!
//! The checkpoint (two alternating slots, each with its own CRC, so a torn write leaves the other) is
//! the LSN before which every record is materialised: the ring reuses a segment only once the durable
//! checkpoint is past it, and an append that would overwrite unmaterialised records waits (bounded by
//! `full_wait`, then the C-STORE is refused with Out of Resources).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const RECORD_MAGIC: u32 = 0x314A_4753; // "SGJ1" little endian
const CHECKPOINT_MAGIC: u32 = 0x4B43_4753; // "SGCK"
const HEADER: u64 = 32;
const ALIGN: u64 = 8;
const KIND_INSTANCE: u8 = 1;
const KIND_PAD: u8 = 2;
/// Bytes of one checkpoint slot (two slots, a sector each).
const SLOT: u64 = 512;

/// The journal's geometry and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalParams {
    /// Bytes per segment file; a record (one instance) must fit in one.
    pub segment_bytes: u64,
    /// Segment files in the ring (at most 64): `segments × segment_bytes` bounds what may wait for the
    /// materialiser.
    pub segments: u32,
    /// How long an append waits for the materialiser to free a segment before it is refused.
    pub full_wait: Duration,
}

impl JournalParams {
    fn ring_bytes(&self) -> u64 {
        self.segment_bytes * u64::from(self.segments)
    }
}

/// Why the journal could not take or give back a record.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal full: the materialiser freed no segment within {0:?}")]
    Full(Duration),
    #[error("a record of {0} bytes does not fit a journal segment")]
    TooLarge(u64),
    #[error("journal stopped after a failed flush ({0}); restart the node to recover it")]
    Failed(String),
    #[error("journaled instances cannot be filed at the moment (index or store failing): refused until they are")]
    Stalled,
    #[error("invalid journal geometry: {0}")]
    Geometry(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a record went: `[start, end)` in LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub start: u64,
    pub end: u64,
}

/// A record read back at start.
#[derive(Debug)]
pub struct Recovered {
    pub placed: Placed,
    pub body: Vec<u8>,
}

/// The durable checkpoint: geometry, epoch and LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    seq: u64,
    lsn: u64,
    epoch: u32,
    segment_bytes: u64,
    segments: u32,
}

impl Checkpoint {
    fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.epoch.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.lsn.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        b[32..36].copy_from_slice(&self.segments.to_le_bytes());
        let crc = crc32fast::hash(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if b.len() < 40 || u32_at(0) != CHECKPOINT_MAGIC || crc32fast::hash(&b[..36]) != u32_at(36)
        {
            return None;
        }
        Some(Checkpoint {
            epoch: u32_at(4),
            seq: u64_at(8),
            lsn: u64_at(16),
            segment_bytes: u64_at(24),
            segments: u32_at(32),
        })
    }
}

struct State {
    /// LSN of the next append (everything before it is written to the page cache).
    next: u64,
    /// Everything before this LSN is on disk.
    durable: u64,
    flushing: bool,
    /// The durable checkpoint's LSN.
    checkpoint: u64,
    /// Segments written since the last flush started (bit per segment).
    dirty: u64,
    failed: Option<String>,
}

/// The journal of one receiver (see the module docs).
pub struct Journal {
    dir: PathBuf,
    params: JournalParams,
    epoch: u32,
    state: Mutex<State>,
    cv: Condvar,
    /// The segment files, opened (or created zero-filled) on first use or ahead of it by a background
    /// thread started with the journal.
    segments: Arc<Vec<Mutex<Option<Arc<File>>>>>,
    /// The checkpoint file and the last checkpoint written (serialises checkpoint writes).
    checkpoint: Mutex<(File, Checkpoint)>,
    /// Tells the thread preparing segments ahead that the journal is gone.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A journal opened at start, with the records its last run left past the checkpoint; [`Opened::resume`]
/// (once they are materialised) turns it into the journal new records go to.
pub struct Opened {
    dir: PathBuf,
    params: JournalParams,
    last: Checkpoint,
    file: File,
    /// Records past the checkpoint, in LSN order.
    pub records: Vec<Recovered>,
    /// Where appending resumes (the end of the last whole record).
    pub end: u64,
}

fn segment_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(format!("seg-{i:02}.jnl"))
}

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Open the journal in `dir` (creating it) and read back the records past its checkpoint. The geometry
/// of an existing journal is kept for reading it; `params` applies from [`Opened::resume`].
pub fn open(dir: &Path, params: JournalParams) -> Result<Opened, JournalError> {
    if params.segments == 0 || params.segments > 64 || params.segment_bytes < 64 * 1024 {
        return Err(JournalError::Geometry(format!(
            "{} segments of {} bytes (1 to 64 segments of at least 64 KiB)",
            params.segments, params.segment_bytes
        )));
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let cp_path = dir.join("checkpoint");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&cp_path)
        .map_err(io_err("open", &cp_path))?;
    let mut slots = [0u8; (2 * SLOT) as usize];
    let n = read_up_to(&file, &mut slots, 0).map_err(io_err("read", &cp_path))?;
    let last = [0, SLOT as usize]
        .iter()
        .filter(|&&o| o + 40 <= n)
        .filter_map(|&o| Checkpoint::decode(&slots[o..o + 40]))
        .max_by_key(|c| c.seq);
    let last = match last {
        Some(c) => c,
        None => {
            // a new journal (an unreadable checkpoint with segments present is not new: refuse)
            if segment_path(dir, 0).exists() {
                return Err(JournalError::Geometry(format!(
                    "{}: no valid checkpoint beside existing segments",
                    cp_path.display()
                )));
            }
            sync_dir(dir)?;
            Checkpoint {
                seq: 0,
                lsn: 0,
                epoch: 0,
                segment_bytes: params.segment_bytes,
                segments: params.segments,
            }
        }
    };
    let (records, end) = scan(dir, &last)?;
    Ok(Opened {
        dir: dir.to_path_buf(),
        params,
        last,
        file,
        records,
        end,
    })
}

/// Read every valid record from `cp.lsn` on (see the module docs for where it stops).
fn scan(dir: &Path, cp: &Checkpoint) -> Result<(Vec<Recovered>, u64), JournalError> {
    let seg = cp.segment_bytes;
    let mut out = Vec::new();
    let mut pos = cp.lsn;
    let mut epoch = cp.epoch;
    let mut files: Vec<Option<File>> = (0..cp.segments).map(|_| None).collect();
    let limit = cp.lsn + seg * u64::from(cp.segments);
    while pos < limit {
        let off = pos % seg;
        if seg - off < HEADER {
            pos += seg - off;
            continue;
        }
        let i = (pos / seg) % u64::from(cp.segments);
        let slot = &mut files[i as usize];
        if slot.is_none() {
            let p = segment_path(dir, i);
            match File::open(&p) {
                Ok(f) => *slot = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_err("open", &p)(e)),
            }
        }
        let Some(f) = slot.as_ref() else { break };
        let mut h = [0u8; HEADER as usize];
        if read_up_to(f, &mut h, off).map_err(io_err("read", dir))? < h.len() {
            break;
        }
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let kind = h[4];
        let rec_epoch = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let len = u64::from(u32::from_le_bytes([h[12], h[13], h[14], h[15]]));
        let lsn = u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]);
        let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
        if magic != RECORD_MAGIC || lsn != pos || rec_epoch < epoch || off + HEADER + len > seg {
            break;
        }
        let mut body = vec![0u8; len as usize];
        if read_up_to(f, &mut body, off + HEADER).map_err(io_err("read", dir))? < body.len() {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[..24]);
        hasher.update(&body);
        if hasher.finalize() != crc {
            break; // torn: never acknowledged
        }
        epoch = rec_epoch;
        match kind {
            KIND_PAD => pos += seg - off,
            KIND_INSTANCE => {
                let end = pos + align(HEADER + len);
                out.push(Recovered {
                    placed: Placed { start: pos, end },
                    body,
                });
                pos = end;
            }
            _ => break,
        }
    }
    Ok((out, pos))
}

impl Opened {
    /// The journal new records go to, once the records read back are materialised: a new epoch and
    /// the checkpoint at the end of what was read, made durable before anything is appended. A changed
    /// geometry starts the log afresh (nothing is left to read in the old one).
    pub fn resume(self) -> Result<Journal, JournalError> {
        let same = self.last.segment_bytes == self.params.segment_bytes
            && self.last.segments == self.params.segments;
        let lsn = if same { self.end } else { 0 };
        if !same {
            for i in 0..64u64 {
                let p = segment_path(&self.dir, i);
                if p.exists() {
                    fs::remove_file(&p).map_err(io_err("remove", &p))?;
                }
            }
            sync_dir(&self.dir)?;
        }
        let cp = Checkpoint {
            seq: self.last.seq + 1,
            lsn,
            epoch: self.last.epoch.wrapping_add(1),
            segment_bytes: self.params.segment_bytes,
            segments: self.params.segments,
        };
        write_checkpoint(&self.file, &cp, &self.dir)?;
        let segments: Arc<Vec<Mutex<Option<Arc<File>>>>> = Arc::new(
            (0..self.params.segments)
                .map(|_| Mutex::new(None))
                .collect(),
        );
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            // the segments are zero-filled ahead of the writer, not in the way of a C-STORE
            let (segments, dir, bytes) = (
                segments.clone(),
                self.dir.clone(),
                self.params.segment_bytes,
            );
            let closed = closed.clone();
            let first = lsn / bytes;
            let n = u64::from(self.params.segments);
            let _ = std::thread::Builder::new()
                .name("journal-prepare".into())
                .spawn(move || {
                    for k in 0..n {
                        if closed.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        let i = (first + k) % n;
                        if let Err(e) = open_segment(&segments, &dir, i, bytes) {
                            tracing::warn!(error = %e, segment = i, "journal segment not prepared ahead");
                            return;
                        }
                    }
                });
        }
        Ok(Journal {
            dir: self.dir,
            params: self.params,
            epoch: cp.epoch,
            state: Mutex::new(State {
                next: lsn,
                durable: lsn,
                flushing: false,
                checkpoint: lsn,
                dirty: 0,
                failed: None,
            }),
            cv: Condvar::new(),
            segments,
            closed,
            checkpoint: Mutex::new((self.file, cp)),
        })
    }
}

fn write_checkpoint(file: &File, cp: &Checkpoint, dir: &Path) -> Result<(), JournalError> {
    let path = dir.join("checkpoint");
    file.write_all_at(&cp.encode(), (cp.seq % 2) * SLOT)
        .and_then(|()| file.sync_data())
        .map_err(io_err("write", &path))
}

fn read_up_to(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Write `parts` back to back at `offset` (one `pwritev` in the usual case).
fn write_parts_at(f: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: the iovecs point into live borrowed slices for the duration of the call.
    let n = unsafe {
        libc::pwritev(
            f.as_raw_fd(),
            iov.as_ptr(),
            iov.len() as libc::c_int,
            offset as libc::off_t,
        )
    };
    let mut done = if n < 0 { 0 } else { n as usize };
    if done == total {
        return Ok(());
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // a short write: the rest part by part
    let mut at = 0usize;
    for p in parts {
        let (start, end) = (at, at + p.len());
        at = end;
        if done >= end {
            continue;
        }
        let from = done - start;
        f.write_all_at(&p[from..], offset + done as u64)?;
        done = end;
    }
    Ok(())
}

/// Segment `i`, opened or prepared once (by the writer or the thread preparing ahead, whichever is first).
fn open_segment(
    slots: &[Mutex<Option<Arc<File>>>],
    dir: &Path,
    i: u64,
    bytes: u64,
) -> Result<Arc<File>, JournalError> {
    let mut slot = slots[i as usize].lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = slot.as_ref() {
        return Ok(f.clone());
    }
    let f = Arc::new(prepare_segment(dir, i, bytes)?);
    *slot = Some(f.clone());
    Ok(f)
}

/// Create segment `i` zero-filled and durable (so later fdatasyncs flush data only).
fn prepare_segment(dir: &Path, i: u64, bytes: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, i);
    if let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) {
        if f.metadata().map(|m| m.len()).ok() == Some(bytes) {
            return Ok(f);
        }
    }
    let span = tracing::info_span!("journal_segment", segment = i, bytes);
    let _g = span.enter();
    let tmp = dir.join(format!("seg-{i:02}.new"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < bytes {
        let n = (bytes - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)
            .map_err(io_err("zero-fill", &tmp))?;
        at += n as u64;
    }
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)?;
    tracing::debug!(path = %path.display(), "journal segment prepared");
    Ok(f)
}

impl Journal {
    pub fn params(&self) -> JournalParams {
        self.params
    }

    /// Append one record (`parts` back to back form its body) to the page cache, in LSN order, and
    /// call `placed` with its position while still holding the append lock (so that whoever consumes
    /// the records sees them in LSN order). Not durable until [`Journal::commit`] returns.
    pub fn append(
        &self,
        parts: &[&[u8]],
        placed: impl FnOnce(Placed),
    ) -> Result<Placed, JournalError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let total = align(HEADER + len);
        let seg = self.params.segment_bytes;
        if total > seg || len > u64::from(u32::MAX) {
            return Err(JournalError::TooLarge(len));
        }
        // the body's checksum before taking the lock (concurrent associations append one at a time:
        // the lock covers only the header's part, the combine and the write)
        let mut body_crc = crc32fast::Hasher::new();
        for p in parts {
            body_crc.update(p);
        }
        let deadline = Instant::now() + self.params.full_wait;
        let mut st = lock(&self.state);
        loop {
            if let Some(f) = &st.failed {
                return Err(JournalError::Failed(f.clone()));
            }
            let off = st.next % seg;
            if seg - off < total {
                // the rest of this segment cannot hold it: pad, and go on at the next one
                if seg - off >= HEADER {
                    let next = st.next;
                    let f = self.segment(next)?;
                    let header = self.header(KIND_PAD, 0, next, &[]);
                    f.write_all_at(&header, off)
                        .map_err(io_err("write", &self.dir))?;
                    st.dirty |= 1 << ((next / seg) % u64::from(self.params.segments));
                }
                st.next += seg - off;
                continue;
            }
            // the segment of the checkpoint (and everything after it) must not be overwritten
            let floor = st.checkpoint / seg * seg;
            if st.next + total <= floor + self.params.ring_bytes() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(JournalError::Full(self.params.full_wait));
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let start = st.next;
        let f = self.segment(start)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut header = self.header(KIND_INSTANCE, len as u32, start, &[]);
        hasher.update(&header[..24]);
        hasher.combine(&body_crc);
        header[24..28].copy_from_slice(&hasher.finalize().to_le_bytes());
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&header);
        all.extend_from_slice(parts);
        write_parts_at(&f, &all, start % seg).map_err(io_err("write", &self.dir))?;
        st.dirty |= 1 << ((start / seg) % u64::from(self.params.segments));
        st.next = start + total;
        let p = Placed {
            start,
            end: st.next,
        };
        placed(p);
        Ok(p)
    }

    /// A record header (its CRC filled in for a bodiless pad).
    fn header(&self, kind: u8, len: u32, lsn: u64, body: &[u8]) -> [u8; HEADER as usize] {
        let mut h = [0u8; HEADER as usize];
        h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        h[4] = kind;
        h[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        h[16..24].copy_from_slice(&lsn.to_le_bytes());
        if kind == KIND_PAD {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&h[..24]);
            hasher.update(body);
            h[24..28].copy_from_slice(&hasher.finalize().to_le_bytes());
        }
        h
    }

    /// The open segment file holding `lsn` (created zero-filled on first use).
    fn segment(&self, lsn: u64) -> Result<Arc<File>, JournalError> {
        let i = (lsn / self.params.segment_bytes) % u64::from(self.params.segments);
        open_segment(&self.segments, &self.dir, i, self.params.segment_bytes)
    }

    /// Return once every record before `end` is on disk: lead a flush (fdatasync of every segment
    /// written since the last one) or wait for the one running. A failed flush stops the journal for
    /// good (what it held is unknown: the node must restart and read the journal back).
    pub fn commit(&self, end: u64) -> Result<(), JournalError> {
        let mut st = lock(&self.state);
        loop {
            if let Some(f) = &st.failed {
                return Err(JournalError::Failed(f.clone()));
            }
            if st.durable >= end {
                return Ok(());
            }
            if st.flushing {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.flushing = true;
            let target = st.next;
            let dirty = std::mem::take(&mut st.dirty);
            let files: Vec<Arc<File>> = self
                .segments
                .iter()
                .enumerate()
                .filter(|(i, _)| dirty & (1 << i) != 0)
                .filter_map(|(_, f)| f.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .collect();
            drop(st);
            let flushed = files.iter().try_for_each(|f| f.sync_data());
            st = lock(&self.state);
            st.flushing = false;
            match flushed {
                Ok(()) => st.durable = st.durable.max(target),
                Err(e) => {
                    tracing::error!(error = %e, "journal flush failed: the journal stops taking instances");
                    st.failed = Some(e.to_string());
                }
            }
            self.cv.notify_all();
        }
    }

    /// Every record before `lsn` is materialised (files and index rows durable): make that the
    /// checkpoint, freeing the segments before it for reuse.
    pub fn checkpoint(&self, lsn: u64) -> Result<(), JournalError> {
        let mut g = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        if lsn <= g.1.lsn {
            return Ok(());
        }
        let cp = Checkpoint {
            seq: g.1.seq + 1,
            lsn,
            ..g.1
        };
        write_checkpoint(&g.0, &cp, &self.dir)?;
        g.1 = cp;
        drop(g);
        let mut st = lock(&self.state);
        st.checkpoint = st.checkpoint.max(lsn);
        self.cv.notify_all();
        Ok(())
    }

    /// Whether the journal refuses new records (a flush failed).
    pub fn failed(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> JournalParams {
        JournalParams {
            segment_bytes: 64 * 1024,
            segments: 3,
            full_wait: Duration::from_millis(200),
        }
    }

    fn bodies(o: &Opened) -> Vec<Vec<u8>> {
        o.records.iter().map(|r| r.body.clone()).collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), params()).unwrap().resume().unwrap();
        let mut want = Vec::new();
        for i in 0..8u8 {
            let body = vec![i; 20_000 + usize::from(i)];
            let p = j.append(&[&body[..10], &body[10..]], |_| {}).unwrap();
            j.commit(p.end).unwrap();
            want.push(body);
        }
        drop(j);
        // nothing checkpointed: all eight come back, over three segments
        let o = open(dir.path(), params()).unwrap();
        assert_eq!(bodies(&o), want);
        let j = o.resume().unwrap();
        // resuming declares them materialised: the next start reads only the second run's record
        let p = j.append(&[b"second run".as_slice()], |_| {}).unwrap();
        j.commit(p.end).unwrap();
        drop(j);
        let o = open(dir.path(), params()).unwrap();
        assert_eq!(bodies(&o), vec![b"second run".to_vec()]);
    }

    #[test]
    fn a_checkpoint_hides_materialised_records_and_frees_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), params()).unwrap().resume().unwrap();
        let body = vec![7u8; 30_000];
        let mut last = None;
        for _ in 0..40 {
            // 40 × 30 kB through a 192 kB ring: only possible with checkpoints
            let p = j.append(&[body.as_slice()], |_| {}).unwrap();
            j.commit(p.end).unwrap();
            j.checkpoint(p.end).unwrap();
            last = Some(p);
        }
        let tail = j.append(&[b"tail".as_slice()], |_| {}).unwrap();
        j.commit(tail.end).unwrap();
        drop(j);
        let o = open(dir.path(), params()).unwrap();
        assert_eq!(bodies(&o), vec![b"tail".to_vec()]);
        assert_eq!(o.records[0].placed.start, tail.start);
        assert!(tail.start >= last.unwrap().end);
    }

    #[test]
    fn a_full_ring_refuses_instead_of_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), params()).unwrap().resume().unwrap();
        let body = vec![1u8; 60_000];
        let mut n = 0;
        let err = loop {
            match j.append(&[body.as_slice()], |_| {}) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(n, 3, "one record per segment");
        assert!(matches!(err, JournalError::Full(_)), "{err}");
        assert!(matches!(
            j.append(&[vec![0u8; 70_000].as_slice()], |_| {}),
            Err(JournalError::TooLarge(_))
        ));
    }

    #[test]
    fn a_torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), params()).unwrap().resume().unwrap();
        let a = j.append(&[b"first".as_slice()], |_| {}).unwrap();
        let b = j.append(&[vec![9u8; 5000].as_slice()], |_| {}).unwrap();
        j.commit(b.end).unwrap();
        drop(j);
        // tear the second record's body
        let seg = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 0))
            .unwrap();
        seg.write_all_at(&[0u8; 100], b.start + HEADER + 2000)
            .unwrap();
        let o = open(dir.path(), params()).unwrap();
        assert_eq!(bodies(&o), vec![b"first".to_vec()]);
        assert_eq!(o.end, a.end);
        // the next run writes over the torn one; the stale bytes behind never come back
        let j = o.resume().unwrap();
        let c = j.append(&[b"after".as_slice()], |_| {}).unwrap();
        assert_eq!(c.start, a.end);
        j.commit(c.end).unwrap();
        drop(j);
        let o = open(dir.path(), params()).unwrap();
        assert_eq!(bodies(&o), vec![b"after".to_vec()]);
    }

    #[test]
    fn records_of_an_earlier_run_behind_the_resume_point_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), params()).unwrap().resume().unwrap();
        let a = j.append(&[vec![1u8; 100].as_slice()], |_| {}).unwrap();
        let b = j.append(&[vec![2u8; 100].as_slice()], |_| {}).unwrap();
        j.commit(b.end).unwrap();
        drop(j);
        // tear the first: the second (never acknowledged in this story) is behind the resume point
        let seg = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 0))
            .unwrap();
        seg.write_all_at(&[0xFFu8; 4], a.start + HEADER + 10)
            .unwrap();
        let o = open(dir.path(), params()).unwrap();
        assert!(o.records.is_empty());
        let j = o.resume().unwrap();
        // same length as the torn one: the next record starts exactly where the stale one does
        let c = j.append(&[vec![3u8; 100].as_slice()], |_| {}).unwrap();
        assert_eq!((c.start, c.end), (a.start, a.end));
        j.commit(c.end).unwrap();
        drop(j);
        let o = open(dir.path(), params()).unwrap();
        assert_eq!(
            bodies(&o),
            vec![vec![3u8; 100]],
            "the older epoch stops the walk"
        );
    }

    #[test]
    fn concurrent_commits_share_flushes_and_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let p = JournalParams {
            segment_bytes: 1 << 20,
            segments: 4,
            ..params()
        };
        let j = Arc::new(open(dir.path(), p).unwrap().resume().unwrap());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..25u8 {
                        let p = j.append(&[[t, i].as_slice()], |_| {}).unwrap();
                        j.commit(p.end).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(j);
        let o = open(dir.path(), p).unwrap();
        assert_eq!(o.records.len(), 100);
    }

    #[test]
    fn a_new_geometry_starts_afresh_once_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), params()).unwrap().resume().unwrap();
        let p = j.append(&[b"old".as_slice()], |_| {}).unwrap();
        j.commit(p.end).unwrap();
        drop(j);
        let bigger = JournalParams {
            segment_bytes: 128 * 1024,
            ..params()
        };
        let o = open(dir.path(), bigger).unwrap();
        assert_eq!(
            bodies(&o),
            vec![b"old".to_vec()],
            "read with the old geometry"
        );
        let j = o.resume().unwrap();
        let p = j.append(&[b"new".as_slice()], |_| {}).unwrap();
        j.commit(p.end).unwrap();
        drop(j);
        let o = open(dir.path(), bigger).unwrap();
        assert_eq!(bodies(&o), vec![b"new".to_vec()]);
    }
}
