//! Filing one received instance: read and check its header, resolve duplicates, make the file durable
//! in the store, record it in the index. The association layer calls this once a data set is complete
//! and answers the C-STORE from the outcome — success only after this returned `Ok`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crashpoint::{self, Step};
use super::files::{stored_content_hash, ClosedFile, ClosedMemory, InstanceStore, StoreError};
use super::header::{self, HeaderError};
use super::journal::JournalError;
use super::materialise::{Filing, Journaled, RecordMeta};
pub use super::record::{FiledHook, InstanceRecord, Origin};
use segnode_db::instances::{IndexedFile, RecordOutcome};
use segnode_db::{Index, IndexError};

/// What the command set announced.
#[derive(Debug, Clone)]
pub struct Announced {
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
}

/// Why an instance was not filed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index: {0}")]
    Index(#[from] IndexError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("internal: {0}")]
    Internal(String),
}

/// How the instance was filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// New instance.
    New(RecordOutcome),
    /// Same SOP Instance UID and same content as the stored one: nothing changed.
    Duplicate,
    /// Same SOP Instance UID, different content: the newer replaced the older.
    Replaced(RecordOutcome),
    /// Durable in the journal; filed and indexed after the response (new, replacement or duplicate
    /// is decided then).
    Journaled,
}

/// The filing service (shared by all associations).
pub struct Ingest {
    pub store: Arc<InstanceStore>,
    pub index: Index,
    /// Told of every instance filed (new or replaced).
    pub on_filed: Option<Arc<dyn FiledHook>>,
    /// The ingest journal (`storage.journal`): instances received in memory are filed through it.
    pub journal: Option<Arc<Filing>>,
}

/// How long the direct path waits for an in-flight journaled copy of the same SOP instance.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Ingest {
    /// File a completely received instance. Blocking work (header parse, fsync) runs off the runtime.
    pub async fn file(
        &self,
        closed: ClosedFile,
        announced: &Announced,
        origin: &Origin,
    ) -> Result<Filed, IngestError> {
        if self.index.unavailable() {
            // answered at once (Out of Resources) while the database is away; the sender retries
            return Err(IngestError::Index(IndexError::pool_timed_out()));
        }
        let filed = self.file_now(closed, announced, origin).await;
        if let Err(IngestError::Index(e)) = &filed {
            self.index.note_error(e);
        }
        filed
    }

    /// File an instance received in memory through the journal: header parsed and checked, then one
    /// durable journal record (its flush shared with concurrent associations); success may be sent on
    /// `Ok`. Only called with a journal (the receiver streams to a file otherwise); without one it is an
    /// internal error.
    pub async fn file_memory(
        &self,
        closed: ClosedMemory,
        announced: &Announced,
        origin: &Origin,
    ) -> Result<Filed, IngestError> {
        if self.index.unavailable() {
            return Err(IngestError::Index(IndexError::pool_timed_out()));
        }
        let Some(filing) = self.journal.clone() else {
            return Err(IngestError::Internal("no ingest journal".into()));
        };
        let store = self.store.clone();
        let (announced, origin) = (announced.clone(), origin.clone());
        let journaled = tokio::task::spawn_blocking(move || {
            let header = header::read_header_bytes(&closed.bytes)?;
            header.check(&announced.sop_class, &announced.sop_instance)?;
            let final_path = store.path_for(
                &header.study_uid,
                &header.series_uid,
                &header.sop_instance_uid,
            )?;
            let rel_path = store.relative(&final_path);
            let meta = RecordMeta {
                association_id: origin.association_id,
                calling_ae: origin.calling_ae,
                called_ae: origin.called_ae,
                peer: origin.peer,
                transfer_syntax: announced.transfer_syntax,
                sop_uid: header.sop_instance_uid.clone(),
                series_uid: header.series_uid.clone(),
                rel_path,
                content_hash: closed.content_hash,
                dataset_bytes: closed.dataset_bytes,
            };
            Ok::<_, IngestError>(filing.file(meta, header, closed.bytes)?)
        })
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))??;
        Ok(match journaled {
            Journaled::Written => Filed::Journaled,
            Journaled::Duplicate => Filed::Duplicate,
        })
    }

    async fn file_now(
        &self,
        closed: ClosedFile,
        announced: &Announced,
        origin: &Origin,
    ) -> Result<Filed, IngestError> {
        let t0 = std::time::Instant::now();
        if let Some(filing) = &self.journal {
            // a copy of the same SOP instance still in the journal is filed first (the look-up below
            // must see it, and the materialiser must not put an older copy over this one)
            if !filing
                .drained_sop(&announced.sop_instance, IN_FLIGHT_WAIT)
                .await
            {
                return Err(IngestError::Internal(
                    "a copy of this instance is still waiting in the ingest journal".into(),
                ));
            }
            filing.checkpoint_filed()?;
        }
        // Two hops off the runtime, side by side: the header parse, and the fdatasync of the temporary
        // file, whose task then waits for the verdict on the header and on the stored copy of this SOP
        // instance (looked up meanwhile by the UID the command announced; the data set must carry the
        // same one) and renames the file durably into place or drops it: no third hop for the rename.
        let temp = closed.path.clone();
        let (content_hash, dataset_bytes) = (closed.content_hash.clone(), closed.dataset_bytes);
        let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel();
        let publishing = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || sync_then_publish(&store, closed, verdict_rx))
        };
        let (parsed, previous) = tokio::join!(
            tokio::task::spawn_blocking(move || header::read_header(&temp)),
            self.index.instance_hash(&announced.sop_instance)
        );
        let verdict = (|| {
            let header = parsed.map_err(|e| IngestError::Internal(e.to_string()))??;
            header.check(&announced.sop_class, &announced.sop_instance)?;
            let final_path = self.store.path_for(
                &header.study_uid,
                &header.series_uid,
                &header.sop_instance_uid,
            )?;
            let previous = previous?;
            let duplicate = previous.as_ref().is_some_and(|(hash, old_rel)| {
                *hash == content_hash && self.store.root().join(old_rel).is_file()
            });
            Ok::<_, IngestError>((header, final_path, previous, duplicate))
        })();
        // the syncing task publishes on `Ok(Some(path))`, drops the file on anything else
        let _ = verdict_tx.send(match &verdict {
            Ok((_, path, _, false)) => Ok(Some(path.clone())),
            Ok((_, _, _, true)) => Ok(None),
            Err(_) => Err(()),
        });
        let published = publishing
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let (header, final_path, previous, duplicate) = verdict?;
        published?;
        if duplicate {
            return Ok(Filed::Duplicate);
        }
        let rel = self.store.relative(&final_path);
        let record = InstanceRecord {
            header: header.clone(),
            transfer_syntax: announced.transfer_syntax.clone(),
            association_id: origin.association_id.clone(),
            calling_ae: origin.calling_ae.clone(),
            called_ae: origin.called_ae.clone(),
            peer: origin.peer.clone(),
            path: rel.clone(),
            size_bytes: dataset_bytes as i64,
            content_hash,
        };
        let t1 = t0.elapsed();
        let recorded = self.index.record_instance(&record).await;
        let t2 = t0.elapsed();
        let outcome = match recorded {
            Ok(o) => o,
            Err(e) => {
                // not acknowledged: the sender resends. A new file without its row goes (a replaced
                // copy keeps its place: its older row still names it).
                if previous.is_none() {
                    let _ = std::fs::remove_file(&final_path);
                }
                return Err(e.into());
            }
        };
        crashpoint::reached(Step::Indexed);
        tracing::trace!(
            header_sync_publish_us = t1.as_micros() as u64,
            index_us = (t2 - t1).as_micros() as u64,
            "filing steps"
        );
        if outcome.new_series {
            tracing::info!(series = %header.series_uid, modality = ?header.modality, "new series");
        }
        if outcome.reopened {
            tracing::info!(series = %header.series_uid, revision = outcome.revision, "late instance: series reopened as a new revision");
        }
        if let Some(hook) = &self.on_filed {
            hook.filed(&header, origin, &final_path, None);
        }
        match previous {
            None => Ok(Filed::New(outcome)),
            Some((_, old_rel)) => {
                if old_rel != rel {
                    // the same SOP instance moved to another study/series: drop the old copy
                    let _ = std::fs::remove_file(self.store.root().join(&old_rel));
                }
                self.index
                    .add_event(
                        &header.series_uid,
                        outcome.revision,
                        "replaced",
                        &format!(
                            "instance {} received again with different content; newer kept",
                            header.sop_instance_uid
                        ),
                    )
                    .await?;
                Ok(Filed::Replaced(outcome))
            }
        }
    }

    /// At start, make store and index agree in both directions:
    /// - an instance file in the store without its index row (a crash after the durable rename, before
    ///   the index commit: never acknowledged) is indexed, with its real content hash, so the sender's
    ///   retry is recognised as a duplicate;
    /// - an index row whose file is gone (removed outside segnode) is taken out of the index, with a
    ///   warning and an event in the series' history, so the series never claims data it cannot load.
    pub async fn reconcile(&self) -> Result<Reconciled, IngestError> {
        let indexed = self.index.indexed_files().await?;
        let root = self.store.root().to_path_buf();
        let (missing_rows, missing_files) = tokio::task::spawn_blocking(move || {
            let known: HashSet<String> = indexed.iter().map(|f| f.path.clone()).collect();
            let gone: Vec<IndexedFile> = indexed
                .into_iter()
                .filter(|f| !root.join(&f.path).is_file())
                .collect();
            (unindexed_files(&root, &known), gone)
        })
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
        let mut done = Reconciled::default();
        for rel in missing_rows {
            let path = self.store.root().join(&rel);
            let p2 = path.clone();
            let read = tokio::task::spawn_blocking(move || {
                let header = header::read_header(&p2).map_err(|e| e.to_string())?;
                let hash = stored_content_hash(&p2).map_err(|e| e.to_string())?;
                Ok::<_, String>((header, hash))
            })
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
            let (header, (content_hash, size)) = match read {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(path = %path.display(), %why, "unreadable file in the store left as is");
                    continue;
                }
            };
            let record = InstanceRecord {
                transfer_syntax: header.transfer_syntax.clone(),
                header,
                association_id: String::new(),
                calling_ae: "(recovered)".into(),
                called_ae: String::new(),
                peer: String::new(),
                path: rel.clone(),
                size_bytes: size as i64,
                content_hash,
            };
            self.index.record_instance(&record).await?;
            done.indexed += 1;
        }
        for f in missing_files {
            tracing::warn!(path = %f.path, sop = %f.sop_uid, series = %f.series_uid, "indexed instance file is missing from the store: removed from the index");
            self.index
                .forget_instance(&f.sop_uid, &f.series_uid)
                .await?;
            self.index
                .add_event(
                    &f.series_uid,
                    f.revision,
                    "file missing",
                    &format!(
                        "instance {}: file {} not in the store at start; removed from the index",
                        f.sop_uid, f.path
                    ),
                )
                .await?;
            done.forgotten += 1;
        }
        if done.indexed > 0 {
            tracing::warn!(
                added = done.indexed,
                "indexed instance files found in the store but missing from the index"
            );
        }
        Ok(done)
    }
}

/// The fdatasync half of filing (runs off the runtime): make the temporary file's data durable, then
/// wait for the verdict: `Ok(Some(path))` renames it durably into place there; a duplicate (`Ok(None)`)
/// or a refusal (`Err`) removes it, as does a failed fdatasync. The durability order README documents:
/// the file is in place and its directory entry durable before its index row is committed, and both
/// before the success status; a crash in between leaves a file without a row, which `reconcile`
/// indexes at the next start.
fn sync_then_publish(
    store: &InstanceStore,
    closed: ClosedFile,
    verdict: tokio::sync::oneshot::Receiver<Result<Option<PathBuf>, ()>>,
) -> Result<(), IngestError> {
    if let Err(e) = closed.sync() {
        closed.discard();
        return Err(e.into());
    }
    crashpoint::reached(Step::Synced);
    match verdict.blocking_recv() {
        Ok(Ok(Some(final_path))) => {
            store.publish(closed, &final_path)?;
            crashpoint::reached(Step::Published);
        }
        _ => closed.discard(),
    }
    Ok(())
}

/// What [`Ingest::reconcile`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Files in the store that had no index row, now indexed.
    pub indexed: usize,
    /// Index rows whose file was gone, now removed.
    pub forgotten: usize,
}

/// Relative paths of `*.dcm` files under `root` (not in `.incoming`) that `known` lacks.
fn unindexed_files(root: &Path, known: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(studies) = std::fs::read_dir(root) else {
        return out;
    };
    for study in studies.flatten() {
        if study.file_name().to_string_lossy().starts_with('.') || !study.path().is_dir() {
            continue;
        }
        let Ok(series) = std::fs::read_dir(study.path()) else {
            continue;
        };
        for s in series.flatten() {
            let Ok(files) = std::fs::read_dir(s.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "dcm") {
                    if let Ok(rel) = p.strip_prefix(root) {
                        let rel = rel.to_string_lossy().into_owned();
                        if !known.contains(&rel) {
                            out.push(rel);
                        }
                    }
                }
            }
        }
    }
    out
}
