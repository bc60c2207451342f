//! The C-STORE SCP as a source: segnode's implementation of [`segnode_net::ScpHandler`].
//!
//! The DICOM layer (crate `segnode-net`) runs the associations; this module decides what they mean to
//! the node: who may call (the [`AccessPolicy`]), whether the node can take associations at all (the
//! index answers), the association journal in the index, where an announced instance goes (a temporary
//! file in the store, filed by [`Ingest`] once complete: success only once it is durable and indexed —
//! or, with the ingest journal, received in memory and durable in the journal, indexed right after),
//! which DIMSE status each filing error earns, the process metrics and the audit trail (associations
//! accepted, rejected and ended, TLS handshakes that failed).

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use segnode_net::dimse::status;
use segnode_net::handler::{
    Announced as NetAnnounced, AssociationInfo, AssociationRequest, Ending, Event, HandshakeEnd,
    InstanceSink, RejectKind, RejectReason, ScpHandler, StoreStatus, Tally,
};

use super::access::ConnectionAccess;
use crate::metrics::{metrics, Rejection};
use crate::store::files::{IncomingFile, IncomingMeta, InstanceStore, MemoryFile, StoreError};
use crate::store::header::HeaderError;
use crate::store::ingest::{Announced, Ingest, IngestError, Origin};
use crate::store::uid;
use segnode_db::associations::AssociationRecord;
use segnode_db::{AssociationState, Index};

/// How long the index may take to answer before a new association is turned away.
const INDEX_CHECK: Duration = Duration::from_secs(5);

/// How long the end of an association waits for its journaled instances to be indexed before it is
/// recorded anyway (the tracker still skips series with instances in flight).
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// The node's C-STORE SCP: shared by every association.
pub struct StoreScp {
    /// This process's name among those sharing the database (`node.name`).
    pub node: String,
    pub store: Arc<InstanceStore>,
    pub index: Index,
    pub ingest: Arc<Ingest>,
    pub policy: super::access::SharedPolicy,
    /// Wakes the completion tracker (an association ended).
    pub tracker_wake: Arc<Notify>,
    /// Instances up to this many bytes are received in memory and filed through the ingest journal
    /// (when there is one); larger ones stream to a temporary file and are filed directly.
    pub journal_max_bytes: usize,
}

/// Where an arriving instance's bytes go.
enum Body {
    /// In memory, for the journal.
    Memory(MemoryFile),
    /// A temporary file, for the direct path.
    File(IncomingFile),
    /// Spilling to a file failed: the rest is drained and the instance refused.
    Failed(StoreError),
    /// Transient, while moving from memory to a file.
    Moving,
}

/// One instance arriving: its bytes, and what the filing needs once it is complete.
pub struct IncomingInstance {
    body: Body,
    /// When its command arrived: receiving the data set took from here to `finish`.
    opened: Instant,
    ingest: Arc<Ingest>,
    announced: Announced,
    origin: Origin,
}

impl InstanceSink for IncomingInstance {
    fn write(&mut self, fragment: &[u8]) {
        if let Body::Memory(m) = &mut self.body {
            if m.write(fragment) {
                return;
            }
            // larger than the journal takes: on to a temporary file
            if let Body::Memory(m) = std::mem::replace(&mut self.body, Body::Moving) {
                self.body = match m.spill(&self.ingest.store) {
                    Ok(f) => Body::File(f),
                    Err(e) => Body::Failed(e),
                };
            }
        }
        if let Body::File(f) = &mut self.body {
            f.write(fragment);
        }
    }

    async fn finish(self) -> StoreStatus {
        let started = Instant::now();
        let filed = match self.body {
            Body::Memory(m) => {
                self.ingest
                    .file_memory(m.close(), &self.announced, &self.origin)
                    .await
            }
            Body::File(f) => match f.close() {
                Ok(closed) => {
                    self.ingest
                        .file(closed, &self.announced, &self.origin)
                        .await
                }
                Err(e) => return store_refusal(&e),
            },
            Body::Failed(e) => return store_refusal(&e),
            Body::Moving => {
                return StoreStatus::failure(
                    status::OUT_OF_RESOURCES,
                    "internal: instance lost its buffer",
                )
            }
        };
        match filed {
            Ok(filed) => {
                debug!(
                    sop = %self.announced.sop_instance,
                    receive_ms = (started - self.opened).as_secs_f64() * 1e3,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    ?filed,
                    "filed"
                );
                StoreStatus::success()
            }
            Err(e) => ingest_refusal(&e),
        }
    }
}

impl ScpHandler for StoreScp {
    type Sink = IncomingInstance;

    async fn ready(&self) -> Result<(), String> {
        // nothing can be filed while the index is unreachable (a database server restarting): say so
        // at once, so the sender retries later
        if self.ingest.journal.as_ref().is_some_and(|j| j.stalled()) {
            // acknowledged instances wait to be filed (the index was away): not before they are
            return Err("journaled instances not filed yet".into());
        }
        if !self.index.unavailable() && self.index.ping(INDEX_CHECK).await {
            Ok(())
        } else {
            Err("index unavailable".into())
        }
    }

    fn admit(&self, r: &AssociationRequest<'_>) -> Result<(), RejectReason> {
        use dicom_ul::association::server::AccessControl;
        let verdict = ConnectionAccess {
            policy: super::access::current(&self.policy),
            peer: r.peer.ip(),
            tls: r.tls.is_some(),
        }
        .check_access(r.local_ae, r.calling_ae, r.called_ae, r.user_identity);
        if let Err(reason) = &verdict {
            crate::audit::record(
                "association_rejected",
                serde_json::json!({
                    "peer": r.peer.to_string(),
                    "calling_ae": r.calling_ae,
                    "called_ae": r.called_ae,
                    "reason": format!("{reason:?}"),
                    "tls": tls_json(r.tls),
                }),
            );
        }
        verdict
    }

    async fn begin(&self, a: &AssociationInfo) -> Result<(), String> {
        let record = AssociationRecord {
            id: a.id.clone(),
            node: self.node.clone(),
            calling_ae: a.calling_ae.clone(),
            called_ae: a.called_ae.clone(),
            peer: a.peer.to_string(),
        };
        self.index
            .begin_association(&record)
            .await
            .map_err(|e| format!("index unavailable: {e}"))?;
        crate::audit::record(
            "association_accepted",
            serde_json::json!({
                "association": a.id,
                "peer": a.peer.to_string(),
                "calling_ae": a.calling_ae,
                "called_ae": a.called_ae,
                "tls": tls_json(a.tls.as_ref()),
            }),
        );
        Ok(())
    }

    async fn end(&self, a: &AssociationInfo, ending: &Ending, tally: &Tally) {
        let state = if ending.released() {
            AssociationState::Released
        } else {
            AssociationState::Aborted
        };
        let outcome = ending.to_string();
        // its instances still in the journal are indexed first: completion on release evidence must
        // see every instance the association stored
        if let Some(journal) = &self.ingest.journal {
            if !journal.drained_association(&a.id, DRAIN_WAIT).await {
                warn!(association = %a.id, "instances of the association still wait in the journal; its end is recorded anyway");
            }
        }
        // which studies and series the association filed into (bounded: the trail must not wait long)
        let filed = if tally.stored > 0 {
            tokio::time::timeout(INDEX_CHECK, self.index.association_series(&a.id))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        crate::audit::record(
            "association_ended",
            serde_json::json!({
                "association": a.id,
                "peer": a.peer.to_string(),
                "calling_ae": a.calling_ae,
                "outcome": outcome,
                "instances_stored": tally.stored,
                "instances_refused": tally.failed,
                "echoes": tally.echoes,
                "bytes": tally.bytes,
                "series": filed,
            }),
        );
        if let Err(e) = self
            .index
            .end_association(&a.id, state, tally.stored, tally.bytes, &outcome)
            .await
        {
            // the series it carried wait for this record (completion on release evidence): keep
            // trying in the background while the database is away
            warn!(error = %e, "could not record the end of the association; retrying");
            let (index, id, wake) = (self.index.clone(), a.id.clone(), self.tracker_wake.clone());
            let (stored, bytes) = (tally.stored, tally.bytes);
            tokio::spawn(async move {
                for _ in 0..600 {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if index
                        .end_association(&id, state, stored, bytes, &outcome)
                        .await
                        .is_ok()
                    {
                        info!(association = %id, "end of the association recorded");
                        wake.notify_one();
                        return;
                    }
                }
                warn!(association = %id, "end of the association not recorded: its series complete after the quiet period");
            });
        }
        self.tracker_wake.notify_one();
    }

    fn open(
        &self,
        a: &AssociationInfo,
        announced: &NetAnnounced,
    ) -> Result<IncomingInstance, StoreStatus> {
        if let Err(e) = uid::validate(&announced.sop_instance) {
            return Err(StoreStatus::failure(
                status::CANNOT_UNDERSTAND,
                format!(
                    "Affected SOP Instance UID `{}`: {e}",
                    announced.sop_instance
                ),
            ));
        }
        let meta = IncomingMeta {
            sop_class_uid: announced.sop_class.clone(),
            sop_instance_uid: announced.sop_instance.clone(),
            transfer_syntax: announced.transfer_syntax.clone(),
            source_ae: a.calling_ae.clone(),
        };
        let body = if self.ingest.journal.is_some() {
            Body::Memory(
                self.store
                    .begin_memory(&meta, self.journal_max_bytes)
                    .map_err(|e| store_refusal(&e))?,
            )
        } else {
            Body::File(self.store.begin(&meta).map_err(|e| store_refusal(&e))?)
        };
        Ok(IncomingInstance {
            body,
            opened: Instant::now(),
            ingest: self.ingest.clone(),
            announced: Announced {
                sop_class: announced.sop_class.clone(),
                sop_instance: announced.sop_instance.clone(),
                transfer_syntax: announced.transfer_syntax.clone(),
            },
            origin: Origin {
                association_id: a.id.clone(),
                calling_ae: a.calling_ae.clone(),
                called_ae: a.called_ae.clone(),
                peer: a.peer.to_string(),
            },
        })
    }

    fn event(&self, event: Event) {
        let m = metrics();
        match event {
            Event::Accepted => m.association_accepted(),
            Event::Rejected(RejectKind::Refused) => m.association_rejected(Rejection::Refused),
            Event::Rejected(RejectKind::Limit) => m.association_rejected(Rejection::Limit),
            Event::Rejected(RejectKind::NotReady) => {
                m.association_rejected(Rejection::IndexUnavailable)
            }
            Event::Echo => m.echo(),
            Event::Received(bytes) => m.received(bytes),
            Event::Instance { stored } => m.instance(stored),
            Event::Handshake { peer, end } => {
                m.handshake_dropped(match end {
                    HandshakeEnd::Evicted => "evicted",
                    HandshakeEnd::TimedOut => "timed_out",
                    HandshakeEnd::TlsFailed => "tls_failed",
                });
                // evictions and timeouts of connections that never spoke DICOM are noise, and a flood
                // of them must not flood the trail either; failed TLS handshakes are worth a line
                if end == HandshakeEnd::TlsFailed {
                    crate::audit::record(
                        "handshake_failed",
                        serde_json::json!({ "peer": peer.to_string(), "tls": true }),
                    );
                }
            }
        }
    }
}

/// The TLS identity of a connection for the audit trail (`null`: plain TCP).
fn tls_json(tls: Option<&segnode_net::TlsPeer>) -> serde_json::Value {
    match tls {
        None => serde_json::Value::Null,
        Some(t) => serde_json::json!({
            "protocol": t.protocol,
            "cipher_suite": t.cipher_suite,
            "certificate_sha256": t.certificate_sha256,
        }),
    }
}

fn store_refusal(e: &StoreError) -> StoreStatus {
    // disk full, I/O errors, reserve reached: out of resources — the sender may retry later
    StoreStatus::failure(status::OUT_OF_RESOURCES, e.to_string())
}

fn header_refusal(e: &HeaderError) -> StoreStatus {
    let status = match e {
        HeaderError::InstanceMismatch { .. } | HeaderError::ClassMismatch { .. } => {
            status::DATASET_DOES_NOT_MATCH_SOP_CLASS
        }
        _ => status::CANNOT_UNDERSTAND,
    };
    StoreStatus::failure(status, e.to_string())
}

fn ingest_refusal(e: &IngestError) -> StoreStatus {
    match e {
        IngestError::Header(h) => header_refusal(h),
        IngestError::Store(s) => store_refusal(s),
        IngestError::Index(_) | IngestError::Internal(_) | IngestError::Journal(_) => {
            StoreStatus::failure(status::OUT_OF_RESOURCES, e.to_string())
        }
    }
}
