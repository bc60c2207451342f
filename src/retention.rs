//! Retention: received series leave the disk once they are done with, so a node left alone for months
//! does not fill its disk and start refusing work.
//!
//! Every `storage.purge_interval_s` (and once shortly after start) the loop
//! 1. finishes purges a stopped node left half-way (series still PURGING);
//! 2. purges series completed more than `storage.keep_hours` ago whose jobs are finished and whose
//!    deliveries are done (the index decides: [`segnode_db::retention`]);
//! 3. when the store's file system is fuller than `storage.purge_above_percent`, purges finished series
//!    oldest first, whatever their age, until it is under `storage.purge_below_percent`.
//!
//! A purge claims the series in the index first (one node wins on a shared database), removes its files
//! (never a file written after the claim: an instance re-sent meanwhile belongs to a new revision), then
//! drops the instance rows and marks the series PURGED; its history, jobs and deliveries stay.
//! `segnode series purge UID` runs the same steps for one series.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use segnode_db::retention::{PurgeFile, PurgeTarget};
use segnode_db::{now_ms, Index, IndexError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Settings;

/// What one purge did.
#[derive(Debug, Clone, PartialEq)]
pub struct Purged {
    pub files: usize,
    pub bytes: i64,
    /// Files left because they were written after the claim (a new revision).
    pub kept_newer: usize,
}

/// Remove the files of a claimed series and finish the purge in the index.
pub async fn purge_claimed(
    index: &Index,
    store_root: &Path,
    target: &PurgeTarget,
    claimed_at: SystemTime,
) -> Result<Purged, IndexError> {
    let files = index.purge_files(target).await?;
    let root = store_root.to_path_buf();
    let (removed, kept_newer) =
        tokio::task::spawn_blocking(move || remove_files(&root, files, claimed_at))
            .await
            .unwrap_or_default();
    index.finish_purge(target, &removed).await?;
    Ok(Purged {
        files: removed.len(),
        bytes: removed.iter().map(|f| f.size_bytes).sum(),
        kept_newer,
    })
}

/// Remove the files (and the folders they leave empty); returns those gone and how many were kept
/// because they changed after `claimed_at`.
fn remove_files(
    root: &Path,
    files: Vec<PurgeFile>,
    claimed_at: SystemTime,
) -> (Vec<PurgeFile>, usize) {
    let mut removed = Vec::new();
    let mut kept = 0;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in files {
        // only paths the store wrote: relative, inside the root
        if f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
            continue;
        }
        let path = root.join(&f.path);
        match std::fs::metadata(&path) {
            Ok(m) if m.modified().is_ok_and(|t| t > claimed_at) => {
                kept += 1;
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                removed.push(f);
                continue;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot inspect a file to purge");
                continue;
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(d) = path.parent() {
                    if !dirs.iter().any(|x| x == d) {
                        dirs.push(d.to_path_buf());
                    }
                }
                removed.push(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(f),
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove a purged file"),
        }
    }
    // the series folder, then the study folder, when empty (remove_dir refuses non-empty ones)
    for d in dirs {
        if std::fs::remove_dir(&d).is_ok() {
            if let Some(study) = d.parent().filter(|p| *p != root) {
                let _ = std::fs::remove_dir(study);
            }
        }
    }
    (removed, kept)
}

/// Claim and purge one series if it may be purged; `None` when it may not (still in use, or taken).
pub async fn purge_series(
    index: &Index,
    store_root: &Path,
    target: &PurgeTarget,
    why: &str,
) -> Result<Option<Purged>, IndexError> {
    let claimed_at = SystemTime::now();
    if !index.claim_purge(target, why).await? {
        return Ok(None);
    }
    purge_claimed(index, store_root, target, claimed_at)
        .await
        .map(Some)
}

/// Used share of the file system holding `path`, in percent.
pub fn used_percent(path: &Path) -> Option<f64> {
    let (total, free) = crate::store::files::disk_space(path)?;
    (total > 0).then(|| 100.0 * (total - free) as f64 / total as f64)
}

/// The retention loop of one node.
pub struct Retention {
    pub index: Index,
    pub settings: Arc<Settings>,
    pub store_root: PathBuf,
}

impl Retention {
    /// One pass: resume, age, watermark. Returns how many series were purged.
    pub async fn pass(&self) -> Result<usize, IndexError> {
        let s = &self.settings.storage;
        let mut n = 0;
        for t in self.index.purging_series().await? {
            purge_claimed(&self.index, &self.store_root, &t, SystemTime::now()).await?;
            n += 1;
        }
        if s.keep_hours > 0.0 {
            let cutoff = now_ms() - (s.keep_hours * 3_600_000.0) as i64;
            for t in self.index.purge_candidates(cutoff, 500).await? {
                let why = format!("retention: finished more than {} h ago", s.keep_hours);
                if let Some(p) = purge_series(&self.index, &self.store_root, &t, &why).await? {
                    info!(series = %t.series_uid, files = p.files, mb = p.bytes / 1_048_576, "series purged (retention)");
                    n += 1;
                }
            }
        }
        if s.purge_above_percent > 0.0 {
            let high = used_percent(&self.store_root).unwrap_or(0.0);
            if high > s.purge_above_percent {
                let mut used = high;
                'outer: while used > s.purge_below_percent {
                    let batch = self.index.purge_candidates(now_ms() + 1, 20).await?;
                    if batch.is_empty() {
                        warn!(
                            used_percent = used,
                            "disk above the purge watermark and nothing finished left to purge"
                        );
                        break;
                    }
                    for t in batch {
                        let why = format!(
                            "watermark: disk {used:.0} % used (purge above {} %, down to {} %)",
                            s.purge_above_percent, s.purge_below_percent
                        );
                        if let Some(p) =
                            purge_series(&self.index, &self.store_root, &t, &why).await?
                        {
                            info!(series = %t.series_uid, files = p.files, mb = p.bytes / 1_048_576, "series purged (watermark)");
                            n += 1;
                        }
                        used = used_percent(&self.store_root).unwrap_or(0.0);
                        if used <= s.purge_below_percent {
                            break 'outer;
                        }
                    }
                }
                info!(from = high, to = used, "watermark purge done");
            }
        }
        Ok(n)
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_secs_f64(self.settings.storage.purge_interval_s.max(1.0));
        let mut wait = every.min(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = every;
            if let Err(e) = self.pass().await {
                warn!(error = %e, "retention pass failed");
            }
        }
    }
}
