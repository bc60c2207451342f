//! One accepted connection: negotiation, then the DIMSE loop of Verification and Storage until the peer
//! releases or aborts, with every C-STORE streamed to disk and answered only once it is durable.
//!
//! Memory is bounded by one PDU: command fragments are collected (they are small), data fragments go
//! straight to the instance's temporary file as they arrive. A data set that cannot be filed is still
//! drained from the association and answered with a failure status, so one bad instance never breaks
//! the rest of a transfer. Anything that breaks the protocol (data without a command, a fragment for
//! the wrong context, an undecodable command, a timeout) aborts this association only.

use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use super::access::ConnectionAccess;
use super::dimse::{self, command_field, status, Command};
use super::sop;
use crate::config::secs;
use crate::node::Node;
use crate::store::files::{IncomingFile, IncomingMeta, StoreError};
use crate::store::header::HeaderError;
use crate::store::ingest::{Announced, IngestError, Origin};
use crate::store::uid;
use segnode_db::associations::AssociationRecord;
use segnode_db::AssociationState;

type Association = dicom_ul::association::server::AsyncServerAssociation<TcpStream>;

/// An accepted presentation context.
#[derive(Debug, Clone)]
struct Context {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

/// A C-STORE whose data set is arriving.
struct PendingStore {
    pc: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    /// The temporary file, or why the instance will be refused once its data set is drained.
    target: Result<IncomingFile, Refusal>,
}

/// A failure answer for a C-STORE.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    comment: String,
}

impl Refusal {
    fn new(status: u16, comment: impl Into<String>) -> Refusal {
        Refusal {
            status,
            comment: comment.into(),
        }
    }
}

fn store_refusal(e: &StoreError) -> Refusal {
    // disk full, I/O errors, reserve reached: out of resources — the sender may retry later
    Refusal::new(status::OUT_OF_RESOURCES, e.to_string())
}

fn header_refusal(e: &HeaderError) -> Refusal {
    let status = match e {
        HeaderError::InstanceMismatch { .. } | HeaderError::ClassMismatch { .. } => {
            status::DATASET_DOES_NOT_MATCH_SOP_CLASS
        }
        _ => status::CANNOT_UNDERSTAND,
    };
    Refusal::new(status, e.to_string())
}

/// How an association ended.
enum Ending {
    Released,
    PeerAborted,
    Aborted(String),
}

/// Per-association counters for the closing log line.
#[derive(Default)]
struct Tally {
    stored: i64,
    failed: i64,
    echoes: i64,
    bytes: i64,
}

/// Serve one TCP connection until its association ends.
pub async fn serve_connection(
    node: Arc<Node>,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("association", id = %id, peer = %peer);
    async move {
        let _ = socket.set_nodelay(true);
        let d = &node.settings.dicom;
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(ConnectionAccess {
                policy: node.policy.clone(),
                peer: peer.ip(),
            })
            .ae_title(d.ae_title.as_str())
            .max_pdu_length(d.max_pdu)
            .strict(true)
            .write_timeout(secs(d.dimse_timeout_s))
            .with_abstract_syntax(sop::VERIFICATION);
        for (uid, _) in sop::STORAGE_SOP_CLASSES {
            options = options.with_abstract_syntax(*uid);
        }
        for (uid, _) in sop::TRANSFER_SYNTAXES {
            options = options.with_transfer_syntax(*uid);
        }
        let assoc =
            match tokio::time::timeout(secs(d.artim_timeout_s), options.establish_async(socket))
                .await
            {
                Err(_) => {
                    info!("no association request within the ARTIM timeout; connection closed");
                    return;
                }
                Ok(Err(dicom_ul::association::Error::Rejected { association_rj, .. })) => {
                    warn!(reason = ?association_rj.source, "association rejected");
                    crate::metrics::metrics()
                        .association_rejected(crate::metrics::Rejection::Refused);
                    return;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "association could not be established; connection closed");
                    return;
                }
                Ok(Ok(a)) => a,
            };
        let mut handler = Handler::new(node, assoc, id, peer);
        handler.run(shutdown).await;
    }
    .instrument(span)
    .await
}

struct Handler {
    node: Arc<Node>,
    assoc: Option<Association>,
    id: String,
    peer: SocketAddr,
    calling_ae: String,
    called_ae: String,
    contexts: Vec<Context>,
    tally: Tally,
}

impl Handler {
    fn new(node: Arc<Node>, assoc: Association, id: String, peer: SocketAddr) -> Handler {
        use dicom_ul::association::Association as _;
        let contexts = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| Context {
                id: pc.id,
                abstract_syntax: uid::trim(&pc.abstract_syntax).to_string(),
                transfer_syntax: uid::trim(&pc.transfer_syntax).to_string(),
            })
            .collect();
        let calling_ae = assoc.peer_ae_title().trim().to_string();
        let called_ae = assoc.called_ae_title().trim().to_string();
        Handler {
            node,
            assoc: Some(assoc),
            id,
            peer,
            calling_ae,
            called_ae,
            contexts,
            tally: Tally::default(),
        }
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        let started = Instant::now();
        info!(
            calling_ae = %self.calling_ae,
            called_ae = %self.called_ae,
            contexts = self.contexts.len(),
            "association accepted"
        );
        crate::metrics::metrics().association_accepted();
        let record = AssociationRecord {
            id: self.id.clone(),
            node: self.node.name.clone(),
            calling_ae: self.calling_ae.clone(),
            called_ae: self.called_ae.clone(),
            peer: self.peer.to_string(),
        };
        if let Err(e) = self.node.index.begin_association(&record).await {
            warn!(error = %e, "index unavailable: aborting the association");
            self.abort().await;
            return;
        }
        let ending = self.dimse_loop(&mut shutdown).await;
        let (state, outcome) = match &ending {
            Ending::Released => (AssociationState::Released, "released".to_string()),
            Ending::PeerAborted => (AssociationState::Aborted, "aborted by peer".to_string()),
            Ending::Aborted(why) => (AssociationState::Aborted, format!("aborted: {why}")),
        };
        if let Ending::Aborted(_) = ending {
            self.abort().await;
        }
        if let Err(e) = self
            .node
            .index
            .end_association(
                &self.id,
                state,
                self.tally.stored,
                self.tally.bytes,
                &outcome,
            )
            .await
        {
            // the series it carried wait for this record (completion on release evidence): keep
            // trying in the background while the database is away
            warn!(error = %e, "could not record the end of the association; retrying");
            let (index, id, wake) = (
                self.node.index.clone(),
                self.id.clone(),
                self.node.tracker_wake.clone(),
            );
            let (stored, bytes, outcome) = (self.tally.stored, self.tally.bytes, outcome.clone());
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
        self.node.tracker_wake.notify_one();
        info!(
            calling_ae = %self.calling_ae,
            instances = self.tally.stored,
            failed = self.tally.failed,
            echoes = self.tally.echoes,
            bytes = self.tally.bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome = %outcome,
            "association ended"
        );
    }

    async fn abort(&mut self) {
        if let Some(a) = self.assoc.take() {
            let _ = a.abort().await;
        }
    }

    async fn receive(&mut self, limit: Duration) -> Result<Pdu, String> {
        let assoc = self.assoc.as_mut().ok_or("association closed")?;
        match tokio::time::timeout(limit, assoc.receive()).await {
            Err(_) => Err(format!("no PDU within {limit:?}")),
            Ok(Err(e)) => Err(format!("receive failed: {e}")),
            Ok(Ok(pdu)) => Ok(pdu),
        }
    }

    async fn send_command(&mut self, pc: u8, bytes: Vec<u8>) -> Result<(), String> {
        let assoc = self.assoc.as_mut().ok_or("association closed")?;
        assoc
            .send(&dimse::command_pdu(pc, bytes))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    async fn dimse_loop(&mut self, shutdown: &mut watch::Receiver<bool>) -> Ending {
        let d = &self.node.settings.dicom;
        let (idle, dimse_limit) = (secs(d.idle_timeout_s), secs(d.dimse_timeout_s));
        let mut command: Vec<u8> = Vec::new();
        let mut command_pc: Option<u8> = None;
        let mut pending: Option<PendingStore> = None;
        loop {
            let between_messages = pending.is_none() && command.is_empty();
            let pdu = if between_messages {
                if *shutdown.borrow() {
                    return Ending::Aborted("node shutting down".into());
                }
                tokio::select! {
                    r = self.receive(idle) => r,
                    _ = shutdown.changed() => return Ending::Aborted("node shutting down".into()),
                }
            } else {
                self.receive(dimse_limit).await
            };
            let pdu = match pdu {
                Ok(p) => p,
                Err(why) => return Ending::Aborted(why),
            };
            match pdu {
                Pdu::PData { data } => {
                    for pv in data {
                        let step = match pv.value_type {
                            PDataValueType::Command => {
                                if pending.is_some() {
                                    Err("command fragment while a data set was expected"
                                        .to_string())
                                } else if command_pc
                                    .is_some_and(|pc| pc != pv.presentation_context_id)
                                {
                                    Err("command fragments on two presentation contexts"
                                        .to_string())
                                } else {
                                    command_pc = Some(pv.presentation_context_id);
                                    command.extend_from_slice(&pv.data);
                                    if command.len() > 64 * 1024 {
                                        Err("command set larger than 64 KiB".to_string())
                                    } else if pv.is_last {
                                        let bytes = std::mem::take(&mut command);
                                        let pc =
                                            command_pc.take().unwrap_or(pv.presentation_context_id);
                                        self.on_command(pc, &bytes).await.map(|p| pending = p)
                                    } else {
                                        Ok(())
                                    }
                                }
                            }
                            PDataValueType::Data => match pending.as_mut() {
                                None => Err("data fragment without a command".to_string()),
                                Some(p) if p.pc != pv.presentation_context_id => {
                                    Err("data fragment on another presentation context".to_string())
                                }
                                Some(p) => {
                                    self.tally.bytes += pv.data.len() as i64;
                                    crate::metrics::metrics().received(pv.data.len() as u64);
                                    if let Ok(f) = p.target.as_mut() {
                                        f.write(&pv.data);
                                    }
                                    if pv.is_last {
                                        match pending.take() {
                                            Some(p) => self.finish_store(p).await,
                                            None => Ok(()),
                                        }
                                    } else {
                                        Ok(())
                                    }
                                }
                            },
                        };
                        if let Err(why) = step {
                            return Ending::Aborted(why);
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if pending.is_some() || !command.is_empty() {
                        warn!("release requested in the middle of a message; the partial instance is dropped");
                    }
                    if let Some(mut a) = self.assoc.take() {
                        let _ = a.send(&Pdu::ReleaseRP).await;
                    }
                    return Ending::Released;
                }
                Pdu::AbortRQ { source } => {
                    debug!(?source, "peer aborted");
                    self.assoc.take();
                    return Ending::PeerAborted;
                }
                other => {
                    return Ending::Aborted(format!("unexpected PDU {}", pdu_name(&other)));
                }
            }
        }
    }

    fn context(&self, pc: u8) -> Option<&Context> {
        self.contexts.iter().find(|c| c.id == pc)
    }

    /// A complete command set arrived; returns the store that now expects its data set, if any.
    async fn on_command(&mut self, pc: u8, bytes: &[u8]) -> Result<Option<PendingStore>, String> {
        let cmd: Command = dimse::decode(bytes).map_err(|e| format!("bad command set: {e}"))?;
        let ctx = self.context(pc).cloned().ok_or_else(|| {
            format!("command on presentation context {pc}, which was not accepted")
        })?;
        match cmd.field {
            command_field::C_ECHO_RQ => {
                self.tally.echoes += 1;
                crate::metrics::metrics().echo();
                let rsp = dimse::encode_response(
                    command_field::C_ECHO_RSP,
                    cmd.message_id,
                    sop::VERIFICATION,
                    None,
                    status::SUCCESS,
                    None,
                );
                self.send_command(pc, rsp).await?;
                Ok(None)
            }
            command_field::C_STORE_RQ if cmd.has_dataset => Ok(Some(self.start_store(&ctx, &cmd))),
            command_field::C_STORE_RQ => Err("C-STORE-RQ without a data set".into()),
            other => Err(format!("unsupported DIMSE command 0x{other:04X}")),
        }
    }

    fn start_store(&self, ctx: &Context, cmd: &Command) -> PendingStore {
        let sop_class = cmd.affected_sop_class.clone().unwrap_or_default();
        let sop_instance = cmd.affected_sop_instance.clone().unwrap_or_default();
        let target = if sop_class != ctx.abstract_syntax {
            Err(Refusal::new(
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("SOP class {sop_class} not negotiated on this context"),
            ))
        } else if let Err(e) = uid::validate(&sop_instance) {
            Err(Refusal::new(
                status::CANNOT_UNDERSTAND,
                format!("Affected SOP Instance UID `{sop_instance}`: {e}"),
            ))
        } else {
            self.node
                .store
                .begin(&IncomingMeta {
                    sop_class_uid: sop_class.clone(),
                    sop_instance_uid: sop_instance.clone(),
                    transfer_syntax: ctx.transfer_syntax.clone(),
                    source_ae: self.calling_ae.clone(),
                })
                .map_err(|e| store_refusal(&e))
        };
        PendingStore {
            pc: ctx.id,
            message_id: cmd.message_id,
            sop_class,
            sop_instance,
            transfer_syntax: ctx.transfer_syntax.clone(),
            target,
        }
    }

    /// The data set is complete: file it durably, then answer.
    async fn finish_store(&mut self, p: PendingStore) -> Result<(), String> {
        let started = Instant::now();
        let PendingStore {
            pc,
            message_id,
            sop_class,
            sop_instance,
            transfer_syntax,
            target,
        } = p;
        let result = match target {
            Err(r) => Err(r),
            Ok(file) => match file.close() {
                Err(e) => Err(store_refusal(&e)),
                Ok(closed) => {
                    let announced = Announced {
                        sop_class: sop_class.clone(),
                        sop_instance: sop_instance.clone(),
                        transfer_syntax,
                    };
                    let origin = Origin {
                        association_id: self.id.clone(),
                        calling_ae: self.calling_ae.clone(),
                        called_ae: self.called_ae.clone(),
                        peer: self.peer.to_string(),
                    };
                    self.node
                        .ingest
                        .file(closed, &announced, &origin)
                        .await
                        .map_err(|e| ingest_refusal(&e))
                }
            },
        };
        let (st, comment) = match &result {
            Ok(filed) => {
                self.tally.stored += 1;
                crate::metrics::metrics().instance(true);
                debug!(sop = %sop_instance, ms = started.elapsed().as_secs_f64() * 1e3, ?filed, "stored");
                (status::SUCCESS, None)
            }
            Err(r) => {
                self.tally.failed += 1;
                crate::metrics::metrics().instance(false);
                warn!(sop = %sop_instance, status = format!("0x{:04X}", r.status), reason = %r.comment, "instance refused");
                (r.status, Some(r.comment.as_str()))
            }
        };
        let rsp = dimse::encode_response(
            command_field::C_STORE_RSP,
            message_id,
            &sop_class,
            Some(&sop_instance),
            st,
            comment,
        );
        self.send_command(pc, rsp).await
    }
}

fn ingest_refusal(e: &IngestError) -> Refusal {
    match e {
        IngestError::Header(h) => header_refusal(h),
        IngestError::Store(s) => store_refusal(s),
        IngestError::Index(_) | IngestError::Internal(_) => {
            Refusal::new(status::OUT_OF_RESOURCES, e.to_string())
        }
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::Unknown { .. } => "unknown",
    }
}
