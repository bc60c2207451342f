//! The journal's two ends: [`Filing::file`] puts a received instance in the journal (one shared flush,
//! then the C-STORE success), and the materialiser — one thread — turns the journal's records into
//! instance files and index rows after the response, a batch at a time:
//!
//! 1. duplicates resolved against the index (one query per batch) and earlier records of the batch;
//! 2. every file of the batch written to a temporary file, then all of them fdatasync'd (in parallel);
//! 3. renamed into place, and each directory of the batch fsync'd once;
//! 4. one index transaction for the batch's rows;
//! 5. the batch's instances leave the in-flight set, and the journal's checkpoint is advanced past
//!    it (lazily: every quarter segment or half second), making its segments reusable.
//!
//! A crash anywhere in between leaves the batch's records past the checkpoint: the next start replays
//! them ([`recover`]) before it takes associations. Replaying is idempotent — a record whose content
//! the index already holds, with its file in place, is a duplicate and skipped; files are only ever
//! renamed into place whole and synced, so no partial file appears.
//!
//! The in-flight set is what the rest of the node must account for while instances are acknowledged
//! but not yet indexed: the end of an association is recorded only once its instances are drained
//! ([`Filing::drained_association`], so release-based completion never sees a partial series), the
//! completion tracker skips series with instances in flight ([`Filing::series_in_flight`]), a
//! second copy of an instance still in flight is recognised as a duplicate here, and the direct
//! (un-journaled) path waits for an in-flight copy of the same SOP instance before its own look-up.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::crashpoint::{self, Step};
use super::files::{sync_dir, InstanceStore, StoreError};
use super::header::{self, InstanceHeader};
use super::journal::{self, Journal, JournalError, Placed};
use super::record::{FiledHook, InstanceRecord, Origin};
use segnode_db::instances::NewInstance;
use segnode_db::{Index, IndexError};

/// What a journal record says about its instance, besides the file itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordMeta {
    pub association_id: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
    /// As received (and stored).
    pub transfer_syntax: String,
    pub sop_uid: String,
    pub series_uid: String,
    /// Relative to the storage directory.
    pub rel_path: String,
    /// xxh3-128 of the data set, hex.
    pub content_hash: String,
    pub dataset_bytes: u64,
}

impl RecordMeta {
    fn origin(&self) -> Origin {
        Origin {
            association_id: self.association_id.clone(),
            calling_ae: self.calling_ae.clone(),
            called_ae: self.called_ae.clone(),
            peer: self.peer.clone(),
        }
    }
}

/// Record body: `u32` length of the JSON metadata, the metadata, the Part 10 file.
fn encode(meta: &RecordMeta) -> Vec<u8> {
    let json = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

fn decode(mut body: Vec<u8>) -> Option<(RecordMeta, Vec<u8>)> {
    let n = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let meta: RecordMeta = serde_json::from_slice(body.get(4..4usize.checked_add(n)?)?).ok()?;
    let file = body.split_off(4 + n);
    Some((meta, file))
}

/// A journaled instance waiting for the materialiser.
struct Entry {
    placed: Placed,
    meta: RecordMeta,
    /// Parsed at receipt; `None` for a record read back at start (parsed then).
    header: Option<InstanceHeader>,
    /// The Part 10 file.
    file: Arc<Vec<u8>>,
}

/// How the journal took an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journaled {
    /// Written and durable; filed and indexed after the response.
    Written,
    /// The same content is in flight already (and durable): nothing written.
    Duplicate,
}

/// Why materialising a batch failed (it is retried; nothing is lost, the records stay in the journal).
#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index: {0}")]
    Index(#[from] IndexError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("internal: {0}")]
    Internal(String),
}

/// How the materialiser batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Records per batch at most (one index transaction each).
    pub records: usize,
    /// Bytes of files per batch at most (they are held in memory until indexed).
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits {
            records: 256,
            bytes: 64 << 20,
        }
    }
}

#[derive(Default)]
struct InFlight {
    associations: HashMap<String, usize>,
    series: HashMap<String, usize>,
    /// SOP Instance UID → (content hash, record start, record end) of its latest journaled copy.
    sops: HashMap<String, (String, u64, u64)>,
}

/// The journal and what waits in it (see the module docs).
pub struct Filing {
    journal: Journal,
    inflight: Mutex<InFlight>,
    drained: tokio::sync::Notify,
    queue: Mutex<Option<mpsc::Sender<Entry>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Everything before this LSN is filed (the checkpoint may lag behind it).
    filed: std::sync::atomic::AtomicU64,
    /// Filing a batch failed and is being retried: new instances are refused meanwhile.
    stalled: std::sync::atomic::AtomicBool,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the materialiser needs from the node.
#[derive(Clone)]
pub struct Materialiser {
    pub store: Arc<InstanceStore>,
    pub index: Index,
    pub hook: Option<Arc<dyn FiledHook>>,
    pub runtime: tokio::runtime::Handle,
    pub limits: BatchLimits,
}

/// The journal's directory for this receiver: `<storage>/.journal/<node>/`.
pub fn journal_dir(store: &InstanceStore) -> PathBuf {
    store.root().join(".journal").join(store.folder())
}

/// At start (blocking: run it off the runtime), before any association: open the journal, replay
/// every record its last run left past the checkpoint, resume it with a new epoch and start the
/// materialiser. Returns the filing front and how many records were read back.
pub fn recover(
    dir: &Path,
    params: journal::JournalParams,
    m: Materialiser,
) -> Result<(Arc<Filing>, usize), MaterialiseError> {
    let span = tracing::info_span!("journal_recovery", dir = %dir.display());
    let _g = span.enter();
    let mut opened = journal::open(dir, params)?;
    let mut entries = Vec::new();
    for r in std::mem::take(&mut opened.records) {
        match decode(r.body) {
            Some((meta, file)) => entries.push(Entry {
                placed: r.placed,
                meta,
                header: None,
                file: Arc::new(file),
            }),
            None => tracing::warn!(
                lsn = r.placed.start,
                "journal record with unreadable metadata skipped"
            ),
        }
    }
    let read_back = entries.len();
    // only the latest copy of each SOP instance matters (the earlier ones were replaced by it)
    let mut latest: HashMap<String, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        latest.insert(e.meta.sop_uid.clone(), i);
    }
    let entries: Vec<Entry> = entries
        .into_iter()
        .enumerate()
        .filter(|(i, e)| latest.get(&e.meta.sop_uid) == Some(i))
        .map(|(_, e)| e)
        .collect();
    for batch in entries.chunks(m.limits.records.max(1)) {
        m.materialise(batch, true)?;
    }
    if read_back > 0 {
        tracing::warn!(
            records = read_back,
            "instances acknowledged before a crash were filed from the journal"
        );
    }
    let journal = opened.resume()?;
    // a batch never holds more than a quarter of the ring: appends keep room while it is filed
    let ring = journal.params().segment_bytes * u64::from(journal.params().segments);
    let m = Materialiser {
        limits: BatchLimits {
            bytes: m.limits.bytes.min((ring / 4) as usize),
            ..m.limits
        },
        ..m
    };
    let (tx, rx) = mpsc::channel();
    let filing = Arc::new(Filing {
        journal,
        inflight: Mutex::new(InFlight::default()),
        drained: tokio::sync::Notify::new(),
        queue: Mutex::new(Some(tx)),
        worker: Mutex::new(None),
        filed: std::sync::atomic::AtomicU64::new(0),
        stalled: std::sync::atomic::AtomicBool::new(false),
    });
    let worker = {
        let f = filing.clone();
        std::thread::Builder::new()
            .name("materialiser".into())
            .spawn(move || f.run(m, rx))
            .map_err(|e| MaterialiseError::Internal(e.to_string()))?
    };
    *guard(&filing.worker) = Some(worker);
    Ok((filing, read_back))
}

impl Filing {
    /// Put a received instance (its Part 10 `file`, checked `header` and `meta`) in the journal and
    /// return once it is durable (blocking: run it off the runtime). The materialiser files it later.
    pub fn file(
        &self,
        meta: RecordMeta,
        header: InstanceHeader,
        file: Vec<u8>,
    ) -> Result<Journaled, JournalError> {
        if self.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JournalError::Stalled);
        }
        let file = Arc::new(file);
        let in_flight = guard(&self.inflight)
            .sops
            .get(&meta.sop_uid)
            .filter(|(hash, _, _)| *hash == meta.content_hash)
            .map(|(_, _, end)| *end);
        if let Some(end) = in_flight {
            // the same content is in the journal already: acknowledged once it is durable
            self.journal.commit(end)?;
            return Ok(Journaled::Duplicate);
        }
        let queue = guard(&self.queue)
            .clone()
            .ok_or_else(|| JournalError::Failed("the node is stopping".into()))?;
        let encoded = encode(&meta);
        let data = file.clone();
        let placed = self
            .journal
            .append(&[&encoded, data.as_slice()], |placed| {
                let mut g = guard(&self.inflight);
                *g.associations
                    .entry(meta.association_id.clone())
                    .or_default() += 1;
                *g.series.entry(meta.series_uid.clone()).or_default() += 1;
                g.sops.insert(
                    meta.sop_uid.clone(),
                    (meta.content_hash.clone(), placed.start, placed.end),
                );
                drop(g);
                let _ = queue.send(Entry {
                    placed,
                    meta,
                    header: Some(header),
                    file,
                });
            })?;
        self.journal.commit(placed.end)?;
        crashpoint::reached(Step::Journaled);
        Ok(Journaled::Written)
    }

    /// Wait (at most `limit`) until no instance of association `id` is waiting in the journal;
    /// `false` when the limit passed first.
    pub async fn drained_association(&self, id: &str, limit: Duration) -> bool {
        self.drained_when(limit, |g| !g.associations.contains_key(id))
            .await
    }

    /// Wait (at most `limit`) until SOP instance `sop` is not waiting in the journal.
    pub async fn drained_sop(&self, sop: &str, limit: Duration) -> bool {
        self.drained_when(limit, |g| !g.sops.contains_key(sop))
            .await
    }

    /// Make the checkpoint cover everything filed so far (before the direct path files a SOP instance
    /// the journal held: a replay at the next start must not put the journal's older copy back).
    pub fn checkpoint_filed(&self) -> Result<(), JournalError> {
        let filed = self.filed.load(std::sync::atomic::Ordering::Acquire);
        if filed == 0 {
            return Ok(());
        }
        self.journal.checkpoint(filed)
    }

    async fn drained_when(&self, limit: Duration, done: impl Fn(&InFlight) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&*guard(&self.inflight)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&*guard(&self.inflight));
            }
        }
    }

    /// Whether filing is failing (and retried): the node refuses instances and associations meanwhile.
    pub fn stalled(&self) -> bool {
        self.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether instances of series `uid` are acknowledged but not yet indexed.
    pub fn series_in_flight(&self, uid: &str) -> bool {
        guard(&self.inflight).series.contains_key(uid)
    }

    /// Stop taking records and let the materialiser finish what is queued (at most `limit`).
    pub async fn stop(&self, limit: Duration) {
        guard(&self.queue).take();
        let worker = guard(&self.worker).take();
        if let Some(w) = worker {
            let joined = tokio::task::spawn_blocking(move || w.join());
            if tokio::time::timeout(limit, joined).await.is_err() {
                tracing::warn!("materialiser still busy at shutdown: the journal is replayed at the next start");
            }
        }
    }

    /// The materialiser thread: batches in LSN order until the queue closes.
    fn run(&self, m: Materialiser, rx: mpsc::Receiver<Entry>) {
        // The checkpoint is written lazily — every quarter segment filed, or once the materialiser
        // has been idle or busy for CHECKPOINT_EVERY — not after every batch: replay is idempotent, so
        // a lagging checkpoint only costs replay at start, and one flush per batch less here.
        let mut cp = LazyCheckpoint {
            every_bytes: self.journal.params().segment_bytes / 4,
            filed: None,
            written: None,
            at: Instant::now(),
        };
        loop {
            let first = match rx.recv_timeout(CHECKPOINT_EVERY) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    cp.write(&self.journal, true);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut bytes = first.file.len();
            let mut batch = vec![first];
            if let Some(n) = crashpoint::hold() {
                let until = Instant::now() + Duration::from_secs(5);
                while batch.len() < n {
                    let left = until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
            }
            while batch.len() < m.limits.records && bytes < m.limits.bytes {
                match rx.try_recv() {
                    Ok(e) => {
                        bytes += e.file.len();
                        batch.push(e);
                    }
                    Err(_) => break,
                }
            }
            let end = batch.last().map(|e| e.placed.end).unwrap_or_default();
            // only what is durable (and so acknowledged, or about to be) is materialised
            if let Err(e) = self.journal.commit(end) {
                tracing::error!(error = %e, records = batch.len(), "journal flush failed: these instances were not acknowledged");
                self.release(&batch);
                continue;
            }
            let mut pause = Duration::from_millis(100);
            while let Err(e) = m.materialise(&batch, false) {
                // new instances are refused until this batch is filed (the database is part of
                // "durably stored": while it is away the receiver says so, as the direct path does)
                self.stalled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                if let MaterialiseError::Index(ie) = &e {
                    let _rt = m.runtime.enter();
                    m.index.note_error(ie);
                }
                tracing::warn!(error = %e, records = batch.len(), "materialising journaled instances failed; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            self.stalled
                .store(false, std::sync::atomic::Ordering::SeqCst);
            cp.filed = Some(end);
            self.filed.store(end, std::sync::atomic::Ordering::Release);
            cp.write(&self.journal, false);
            self.release(&batch);
        }
        cp.write(&self.journal, true);
    }

    /// The batch is indexed (or will never be): out of the in-flight set, waiters woken.
    fn release(&self, batch: &[Entry]) {
        let mut locked = guard(&self.inflight);
        let g = &mut *locked;
        for e in batch {
            for (map, key) in [
                (&mut g.associations, &e.meta.association_id),
                (&mut g.series, &e.meta.series_uid),
            ] {
                if let Some(n) = map.get_mut(key) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(key);
                    }
                }
            }
            if g.sops
                .get(&e.meta.sop_uid)
                .is_some_and(|(_, start, _)| *start == e.placed.start)
            {
                g.sops.remove(&e.meta.sop_uid);
            }
        }
        drop(locked);
        self.drained.notify_waiters();
    }
}

/// How long the checkpoint may lag behind what is filed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The materialiser's checkpoint, written when enough was filed since the last one, or enough time
/// passed, or `now`.
struct LazyCheckpoint {
    every_bytes: u64,
    /// Everything before this LSN is filed.
    filed: Option<u64>,
    /// The last checkpoint written.
    written: Option<u64>,
    at: Instant,
}

impl LazyCheckpoint {
    fn write(&mut self, journal: &Journal, now: bool) {
        let Some(filed) = self.filed else { return };
        let since = filed.saturating_sub(self.written.unwrap_or(0));
        if self.written == Some(filed)
            || !(now || since >= self.every_bytes || self.at.elapsed() >= CHECKPOINT_EVERY)
        {
            return;
        }
        match journal.checkpoint(filed) {
            Ok(()) => {
                self.written = Some(filed);
                self.at = Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "journal checkpoint not written: its segments are not reused until one is");
            }
        }
    }
}

/// One record of a batch, planned for filing.
struct Planned<'a> {
    entry: &'a Entry,
    record: InstanceRecord,
    final_path: PathBuf,
    /// (content hash, relative path) of the copy it replaces.
    previous: Option<(String, String)>,
}

impl Materialiser {
    /// File and index one batch (steps 1–4 of the module docs). `replay`: records read back at start.
    fn materialise(&self, batch: &[Entry], replay: bool) -> Result<(), MaterialiseError> {
        let span = tracing::debug_span!("materialise", records = batch.len(), replay);
        let _g = span.enter();
        // 1. what each record is: new, a replacement, or a duplicate
        let mut items = Vec::with_capacity(batch.len());
        for e in batch {
            let header = match &e.header {
                Some(h) => h.clone(),
                None => match header::read_header_bytes(&e.file) {
                    Ok(h) => h,
                    Err(err) => {
                        tracing::warn!(lsn = e.placed.start, sop = %e.meta.sop_uid, error = %err, "journal record not filed: unreadable header");
                        continue;
                    }
                },
            };
            items.push((e, header));
        }
        let sops: Vec<&str> = items.iter().map(|(e, _)| e.meta.sop_uid.as_str()).collect();
        let indexed = self.runtime.block_on(self.index.instance_hashes(&sops))?;
        let mut batch_local: HashMap<&str, (String, String)> = HashMap::new();
        let mut plan: Vec<Planned<'_>> = Vec::new();
        for (e, header) in items {
            let sop = e.meta.sop_uid.as_str();
            let hash = &e.meta.content_hash;
            let duplicate = match batch_local.get(sop) {
                Some((h, _)) => h == hash,
                None => indexed
                    .get(sop)
                    .is_some_and(|(h, rel)| h == hash && self.store.root().join(rel).is_file()),
            };
            if duplicate {
                continue;
            }
            let final_path = match self.store.path_for(
                &header.study_uid,
                &header.series_uid,
                &header.sop_instance_uid,
            ) {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(lsn = e.placed.start, error = %err, "journal record not filed");
                    continue;
                }
            };
            let previous = batch_local
                .get(sop)
                .cloned()
                .or_else(|| indexed.get(sop).cloned());
            batch_local.insert(sop, (hash.clone(), e.meta.rel_path.clone()));
            let record = InstanceRecord {
                transfer_syntax: e.meta.transfer_syntax.clone(),
                association_id: e.meta.association_id.clone(),
                calling_ae: e.meta.calling_ae.clone(),
                called_ae: e.meta.called_ae.clone(),
                peer: e.meta.peer.clone(),
                path: e.meta.rel_path.clone(),
                size_bytes: e.meta.dataset_bytes as i64,
                content_hash: hash.clone(),
                header,
            };
            plan.push(Planned {
                entry: e,
                record,
                final_path,
                previous,
            });
        }
        if plan.is_empty() {
            return Ok(());
        }
        // 2. every file staged, then all synced
        let mut staged = Vec::with_capacity(plan.len());
        for p in &plan {
            match self.store.stage(&p.entry.file) {
                Ok(s) => staged.push(s),
                Err(e) => {
                    staged
                        .into_iter()
                        .for_each(|s: super::files::Staged| s.discard());
                    return Err(e.into());
                }
            }
        }
        if let Err(e) = sync_all(&staged) {
            staged.into_iter().for_each(|s| s.discard());
            return Err(e.into());
        }
        // 3. into place; each directory made durable once
        let mut dirs = BTreeSet::new();
        let several = plan.len() > 1;
        for (i, (p, s)) in plan.iter().zip(staged).enumerate() {
            self.store.place(s, &p.final_path)?;
            if i == 0 && several {
                crashpoint::reached(Step::MidBatch);
            }
            if let Some(d) = p.final_path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        crashpoint::reached(if replay {
            Step::Replaying
        } else {
            Step::Placed
        });
        // 4. one transaction for the batch's rows
        let rows: Vec<NewInstance<'_>> = plan.iter().map(|p| (&p.record).into()).collect();
        let outcomes = self.runtime.block_on(self.index.record_instances(&rows))?;
        crashpoint::reached(Step::BatchIndexed);
        // the bytes go to the hook only for the last record of a path in this batch: an earlier one
        // was replaced on disk by a later one, and the hook pairs the bytes with the file there now
        let last_of_path: HashMap<&Path, usize> = plan
            .iter()
            .enumerate()
            .map(|(i, p)| (p.final_path.as_path(), i))
            .collect();
        for (i, (p, outcome)) in plan.iter().zip(outcomes).enumerate() {
            let h = &p.record.header;
            if outcome.new_series {
                tracing::info!(series = %h.series_uid, modality = ?h.modality, "new series");
            }
            if outcome.reopened {
                tracing::info!(series = %h.series_uid, revision = outcome.revision, "late instance: series reopened as a new revision");
            }
            if let Some((_, old_rel)) = &p.previous {
                if *old_rel != p.record.path {
                    // the same SOP instance moved to another study/series: drop the old copy
                    let _ = std::fs::remove_file(self.store.root().join(old_rel));
                }
                let noted = self.runtime.block_on(self.index.add_event(
                    &h.series_uid,
                    outcome.revision,
                    "replaced",
                    &format!(
                        "instance {} received again with different content; newer kept",
                        h.sop_instance_uid
                    ),
                ));
                if let Err(e) = noted {
                    tracing::warn!(error = %e, "replacement not noted in the series history");
                }
            }
            if let Some(hook) = &self.hook {
                hook.filed(
                    h,
                    &p.entry.meta.origin(),
                    &p.final_path,
                    (last_of_path.get(p.final_path.as_path()) == Some(&i)).then_some(&p.entry.file),
                );
            }
        }
        Ok(())
    }
}

/// fdatasync every staged file, from up to [`SYNC_THREADS`] threads at once: concurrent flushes share
/// the file system's journal commits and the device's cache flushes.
fn sync_all(staged: &[super::files::Staged]) -> Result<(), StoreError> {
    if staged.len() < 2 {
        return staged.iter().try_for_each(|s| s.sync());
    }
    let per = staged.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let running: Vec<_> = staged
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|s| s.sync())))
            .collect();
        running.into_iter().try_for_each(|t| {
            t.join()
                .unwrap_or_else(|_| Err(StoreError::Meta("a sync thread panicked".into())))
        })
    })
}

/// Threads flushing a batch's files at once.
const SYNC_THREADS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_bodies_round_trip() {
        let meta = RecordMeta {
            association_id: "a".into(),
            calling_ae: "SCU".into(),
            called_ae: "SEGNODE".into(),
            peer: "127.0.0.1:1".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            sop_uid: "1.2.3".into(),
            series_uid: "1.2".into(),
            rel_path: "1/1.2/1.2.3.dcm".into(),
            content_hash: "00".into(),
            dataset_bytes: 3,
        };
        let mut body = encode(&meta);
        body.extend_from_slice(b"abc");
        let (m, file) = decode(body).unwrap();
        assert_eq!(m.sop_uid, "1.2.3");
        assert_eq!(file, b"abc");
        assert!(decode(vec![255, 255, 255, 255, 0]).is_none());
    }
}
