//! Read-ahead of arriving series (issue 16, "start before the end"): each slice filed for a series whose
//! facts match a routing rule with a pipeline this process runs is read and decoded to HU on one
//! background thread while the rest of the series still arrives, so that at completion the job loads
//! the volume from memory and only segmentation and result writing remain.
//!
//! What it owns: the per-series sets of [`PreparedSlice`]s, the memory budget
//! (`workers.read_ahead_mb`), the decision which series are worth it, and the hand-over to the job
//! ([`ReadAheadCache::take`]). What keeps it correct: the loader takes a prepared slice only while the
//! stored file is still the one it was read from (`FileId`), so a slice replaced after it was read is
//! read again from its file; a series that turns out not to match (too few slices, say) is dropped
//! when nothing arrived for it for [`STALE_AFTER`]. The rule match ignores the slice-count conditions
//! (unknown until completion). Rules come from the configuration at start: a reload changes routing at
//! once and the read-ahead's choice at the next start (a series read ahead in vain only costs memory
//! until it is dropped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::routing::{Router, SeriesFacts};
use crate::store::header::InstanceHeader;
use crate::store::ingest::{FiledHook, Origin};
use segnode_imaging::volume::{prepare_slice, prepare_slice_bytes, FileId, PreparedSlice};

/// A series with nothing new for this long is dropped from the read-ahead (it did not become a job
/// here: no rule matched at completion, another process took the job, or it is still waiting).
pub const STALE_AFTER: Duration = Duration::from_secs(600);

/// Slices waiting to be read; past it an offer is skipped (the job then reads that file itself).
const QUEUE: usize = 512;

/// File bytes held by waiting offers at most (the journal's in-memory copies); past it an offer goes
/// without them and its file is read instead. Bounds the queue's memory to this whatever the
/// instance size (512 waiting 4 MB instances would otherwise hold 2 GB).
const QUEUE_CONTENT_BYTES: usize = 64 << 20;

/// One filed slice waiting for the reader.
struct Offer {
    series: String,
    path: PathBuf,
    /// The stored file's bytes and its identity when they were written (decoded without a read).
    content: Option<(FileId, Arc<Vec<u8>>)>,
}

/// The slices of one series read so far.
#[derive(Default)]
struct SeriesAhead {
    slices: HashMap<PathBuf, Arc<PreparedSlice>>,
    bytes: usize,
    touched: Option<Instant>,
}

/// The read-ahead of one process (shared by its receiver and its in-process workers).
pub struct ReadAheadCache {
    budget_bytes: usize,
    used: AtomicUsize,
    router: Router,
    /// Pipelines this process runs.
    pipelines: Vec<String>,
    series: Mutex<HashMap<String, SeriesAhead>>,
    queue: Mutex<Option<SyncSender<Offer>>>,
    /// Bytes of file content held by waiting offers.
    queued_content: AtomicUsize,
}

impl ReadAheadCache {
    /// A read-ahead of at most `budget_mb` decoded for series that `router` sends to one of
    /// `pipelines`; its reader thread runs until the cache is dropped.
    pub fn start(budget_mb: u64, router: Router, pipelines: Vec<String>) -> Arc<ReadAheadCache> {
        let (tx, rx) = sync_channel::<Offer>(QUEUE);
        let cache = Arc::new(ReadAheadCache {
            budget_bytes: (budget_mb as usize).saturating_mul(1 << 20),
            used: AtomicUsize::new(0),
            router,
            pipelines,
            series: Mutex::new(HashMap::new()),
            queue: Mutex::new(Some(tx)),
            queued_content: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&cache);
        let spawned = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || {
                lower_priority();
                while let Ok(offer) = rx.recv() {
                    let Some(cache) = weak.upgrade() else { return };
                    if let Some((_, bytes)) = &offer.content {
                        cache
                            .queued_content
                            .fetch_sub(bytes.len(), Ordering::Relaxed);
                    }
                    cache.read(&offer);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "read-ahead thread not started: jobs read their files");
            if let Ok(mut q) = cache.queue.lock() {
                *q = None;
            }
        }
        cache
    }

    /// Whether a series with these facts is routed to a pipeline of this process (slice counts aside).
    pub fn wants(&self, facts: &SeriesFacts) -> bool {
        self.router
            .rules
            .iter()
            .filter(|r| r.matches_ignoring_count(facts))
            .flat_map(|r| r.pipelines.iter())
            .any(|p| p != crate::pipeline::registry::NOOP && self.pipelines.contains(p))
    }

    /// Queue one filed slice to be read (never blocks the filing); `content`: the file's bytes, when
    /// the filer holds them and the file at `path` holds exactly them now.
    pub fn offer(
        &self,
        series_uid: &str,
        facts: &SeriesFacts,
        path: &Path,
        content: Option<&Arc<Vec<u8>>>,
    ) {
        if self.used.load(Ordering::Relaxed) >= self.budget_bytes {
            return;
        }
        {
            let Ok(mut map) = self.series.lock() else {
                return;
            };
            let now = Instant::now();
            match map.get_mut(series_uid) {
                // a series held here was wanted at its first slice
                Some(s) => s.touched = Some(now),
                None => {
                    // the rules and the stale sweep run once per new series, not per slice
                    if !self.wants(facts) {
                        return;
                    }
                    self.drop_stale(&mut map, now);
                    map.insert(
                        series_uid.to_string(),
                        SeriesAhead {
                            touched: Some(now),
                            ..Default::default()
                        },
                    );
                }
            }
        }
        crate::metrics::metrics().read_ahead_held(self.used_bytes());
        let Ok(q) = self.queue.lock() else { return };
        if let Some(tx) = q.as_ref() {
            // the bytes travel while the queue's share of memory allows, with the identity of the file
            // they are (taken now, while the file is certainly still them)
            let content = content
                .filter(|b| {
                    self.queued_content.load(Ordering::Relaxed) + b.len() <= QUEUE_CONTENT_BYTES
                })
                .and_then(|b| FileId::of(path).map(|id| (id, Arc::clone(b))));
            let held = content.as_ref().map_or(0, |(_, b)| b.len());
            self.queued_content.fetch_add(held, Ordering::Relaxed);
            let offer = Offer {
                series: series_uid.to_string(),
                path: path.to_path_buf(),
                content,
            };
            if tx.try_send(offer).is_err() {
                // full (the job reads that file itself) or the reader gone
                self.queued_content.fetch_sub(held, Ordering::Relaxed);
            }
        }
    }

    /// Drop the series with nothing new for [`STALE_AFTER`].
    fn drop_stale(&self, map: &mut HashMap<String, SeriesAhead>, now: Instant) {
        map.retain(|uid, s| {
            let stale = s.touched.is_some_and(|t| now - t > STALE_AFTER);
            if stale {
                self.used.fetch_sub(s.bytes, Ordering::Relaxed);
                tracing::debug!(series = %uid, slices = s.slices.len(), "read-ahead dropped (stale)");
            }
            !stale
        });
    }

    /// Read one slice (on the reader thread) and keep it while its series is still wanted.
    fn read(&self, offer: &Offer) {
        let (series_uid, path) = (offer.series.as_str(), offer.path.as_path());
        if self.used.load(Ordering::Relaxed) >= self.budget_bytes {
            return;
        }
        // a series taken by its job meanwhile (or dropped) is not read any more
        let wanted = self
            .series
            .lock()
            .map(|m| m.contains_key(series_uid))
            .unwrap_or(false);
        if !wanted {
            return;
        }
        let prepared = match &offer.content {
            Some((id, bytes)) => prepare_slice_bytes(path, *id, bytes),
            None => prepare_slice(path),
        };
        let prepared = match prepared {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "read-ahead of a slice failed; the job reads it");
                return;
            }
        };
        let bytes = prepared.bytes();
        if let Ok(mut map) = self.series.lock() {
            if let Some(s) = map.get_mut(series_uid) {
                if let Some(old) = s.slices.insert(path.to_path_buf(), Arc::new(prepared)) {
                    s.bytes -= old.bytes();
                    self.used.fetch_sub(old.bytes(), Ordering::Relaxed);
                }
                s.bytes += bytes;
                self.used.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        crate::metrics::metrics().read_ahead_held(self.used_bytes());
    }

    /// The slices read ahead for a series, handed to its job (and forgotten here).
    pub fn take(&self, series_uid: &str) -> HashMap<PathBuf, Arc<PreparedSlice>> {
        let taken = self
            .series
            .lock()
            .ok()
            .and_then(|mut m| m.remove(series_uid));
        match taken {
            Some(s) => {
                self.used.fetch_sub(s.bytes, Ordering::Relaxed);
                crate::metrics::metrics().read_ahead_held(self.used_bytes());
                s.slices
            }
            None => HashMap::new(),
        }
    }

    /// Memory held now (bytes).
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Drop for ReadAheadCache {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
    }
}

/// Nice value of the reader thread: it works with what the receiving and the running jobs leave idle
/// (on 2 cores, decoding at normal priority took CPU from 4 receiving associations).
const READER_NICE: i32 = 10;

/// Lower the calling thread's scheduling priority to [`READER_NICE`] (Linux: a thread's nice value is
/// its own). Failure only leaves it at normal priority.
fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, READER_NICE)
    };
    if rc != 0 {
        tracing::debug!("read-ahead thread keeps normal priority");
    }
}

/// Routing facts of a series from one of its instances (the slice count is not known yet).
pub fn facts_of(header: &InstanceHeader, origin: &Origin) -> SeriesFacts {
    SeriesFacts {
        modality: header.modality.clone(),
        body_part: header.body_part.clone(),
        series_description: header.series_description.clone(),
        protocol_name: header.protocol_name.clone(),
        slice_thickness: header.slice_thickness,
        orientation: header.iop,
        calling_ae: Some(origin.calling_ae.clone()),
        called_ae: Some(origin.called_ae.clone()),
        slices: 0,
    }
}

impl FiledHook for ReadAheadCache {
    fn filed(
        &self,
        header: &InstanceHeader,
        origin: &Origin,
        path: &Path,
        content: Option<&Arc<Vec<u8>>>,
    ) {
        // multi-frame objects are read whole by the job
        if header.number_of_frames.is_some_and(|n| n > 1) {
            return;
        }
        self.offer(&header.series_uid, &facts_of(header, origin), path, content);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn cache(rules: &str, pipelines: &[&str], budget_mb: u64) -> Arc<ReadAheadCache> {
        let s = Settings::load_from_str_for_tests(rules);
        ReadAheadCache::start(
            budget_mb,
            s.router().expect("rules"),
            pipelines.iter().map(|p| p.to_string()).collect(),
        )
    }

    const CHEST: &str = "[[rules]]\nname = \"chest\"\npipelines = [\"lung\"]\n[rules.match]\n\
        modality = [\"CT\"]\nmin_slices = 40\nmax_slices = 2000\n";

    fn ct() -> SeriesFacts {
        SeriesFacts {
            modality: Some("CT".into()),
            slices: 0,
            ..Default::default()
        }
    }

    #[test]
    fn a_series_still_arriving_is_wanted_whatever_its_count_so_far() {
        let c = cache(CHEST, &["lung"], 64);
        assert!(c.wants(&ct()), "one slice of a 40-slice rule's series");
        let mr = SeriesFacts {
            modality: Some("MR".into()),
            ..ct()
        };
        assert!(!c.wants(&mr));
        // a pipeline this process does not run: nothing to read ahead for
        let other = cache(CHEST, &["cochlear"], 64);
        assert!(!other.wants(&ct()));
    }

    #[test]
    fn a_slice_is_read_held_within_budget_and_handed_over_once() {
        let real =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/chest-ct-crop");
        let slice = std::fs::read_dir(&real)
            .expect("shared chest data")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_file())
            .expect("a slice");
        let off = cache(CHEST, &["lung"], 0);
        off.offer("1.2", &ct(), &slice, None);
        assert!(
            off.series.lock().unwrap().is_empty(),
            "budget 0 reads nothing"
        );

        let c = cache(CHEST, &["lung"], 64);
        c.offer("1.2", &ct(), &slice, None);
        let t0 = Instant::now();
        while c.used_bytes() == 0 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            c.used_bytes() > 122 * 102 * 2,
            "{} bytes held",
            c.used_bytes()
        );
        let taken = c.take("1.2");
        assert_eq!(taken.len(), 1);
        assert!(taken.contains_key(&slice));
        assert_eq!(c.used_bytes(), 0, "handed over, not held");
        assert!(c.take("1.2").is_empty(), "handed over once");

        // the journal's in-memory copy: decoded without a read, the same slice
        let bytes = Arc::new(std::fs::read(&slice).expect("slice bytes"));
        c.offer("1.3", &ct(), &slice, Some(&bytes));
        let t0 = Instant::now();
        while c.used_bytes() == 0 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let from_memory = c.take("1.3");
        assert_eq!(from_memory.len(), 1);
        assert_eq!(
            from_memory[&slice].bytes(),
            taken[&slice].bytes(),
            "the same decoded size from memory as from the file"
        );
        assert_eq!(
            c.queued_content.load(Ordering::Relaxed),
            0,
            "queue's bytes released"
        );
    }
}
