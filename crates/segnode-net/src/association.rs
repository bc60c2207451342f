//! One connection as an SCP: A-ASSOCIATE negotiation, then the DIMSE loop of Verification and Storage
//! until the peer releases or aborts, with every C-STORE streamed into the application's sink and
//! answered only once the sink says how it was filed.
//!
//! Memory is bounded by one PDU: command fragments are collected (they are small), data fragments go
//! straight to the instance's sink as they arrive, from the buffer the socket was read into (no copy
//! in between, [`PduStream::read_frame`]). A data set that cannot be filed is still drained
//! from the association and answered with a failure status, so one bad instance never breaks the rest
//! of a transfer. Anything that breaks the protocol (data without a command, a fragment for the wrong
//! context, an undecodable command, a PDU over our limit, a timeout) aborts this association only.
//!
//! Generic over the byte stream, so the same code serves TCP connections and in-memory tests.

use dicom_ul::pdu::{AbortRQServiceProviderReason, AbortRQSource, PresentationContextResultReason};
use dicom_ul::Pdu;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::dimse::{self, command_field, status, Command};
use crate::handler::{
    Announced, AssociationInfo, AssociationRequest, Ending, Event, InstanceSink, RejectKind,
    ScpHandler, StoreStatus, Tally, TlsPeer,
};
use crate::negotiation::{self, Offer};
use crate::options::ScpOptions;
use crate::slots::Slot;
use crate::wire::{pdu_name, Frame, PduStream, WireError};

/// Largest command set accepted (command sets are a few hundred bytes).
const MAX_COMMAND_SET: usize = 64 * 1024;

/// How a connection went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// No association: nothing arrived within the ARTIM timeout, the first PDU was unreadable or not
    /// an A-ASSOCIATE-RQ (answered with A-ABORT or A-RELEASE-RP as PS3.8 says), or the answer could not
    /// be written.
    NotEstablished(String),
    /// A-ASSOCIATE-RJ sent.
    Rejected(dicom_ul::pdu::AssociationRJ),
    /// The application could not journal the association: aborted before any message.
    NotJournaled(String),
    /// The association ran and ended so.
    Ended(Ending, Tally),
}

/// An accepted presentation context.
#[derive(Debug, Clone)]
struct Context {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

/// A C-STORE whose data set is arriving.
struct PendingStore<K> {
    pc: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    /// The sink, or the refusal to send once the data set is drained.
    target: Result<K, StoreStatus>,
}

/// Serve one connection until its association ends. `shutdown` turning true ends an idle association
/// (A-ABORT) and lets one in the middle of a message finish that message first. The A-ASSOCIATE-RQ
/// must arrive within the ARTIM timeout.
pub async fn serve<S, H>(
    stream: S,
    peer: SocketAddr,
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    shutdown: watch::Receiver<bool>,
) -> Served
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: ScpHandler,
{
    let mut wire = PduStream::new(stream, options.max_pdu);
    let first = wire.read_within(options.artim_timeout).await;
    serve_first(wire, first, peer, None, handler, options, shutdown).await
}

/// Serve a connection whose first PDU (or the failure to read one) the caller has already read, e.g.
/// the listener, which reads it under the handshake timer before giving the connection an association
/// slot. `tls`: the TLS session the connection runs over.
pub async fn serve_first<S, H>(
    mut wire: PduStream<S>,
    first: Result<Pdu, WireError>,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    shutdown: watch::Receiver<bool>,
) -> Served
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: ScpHandler,
{
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("association", id = %id, peer = %peer);
    async move {
        let first = match first {
            Err(WireError::Timeout(_)) => {
                info!("no association request within the ARTIM timeout; connection closed");
                wire.shutdown().await;
                return Served::NotEstablished("ARTIM timeout".into());
            }
            other => other,
        };
        let established = tokio::time::timeout(
            options.artim_timeout,
            establish(&mut wire, first, peer, tls, &id, handler.as_ref(), &options),
        )
        .await;
        let (info, contexts, slot) = match established {
            Err(_) => {
                info!("association not established within the ARTIM timeout; connection closed");
                wire.shutdown().await;
                return Served::NotEstablished("ARTIM timeout".into());
            }
            Ok(Err(served)) => {
                wire.shutdown().await;
                return served;
            }
            Ok(Ok(a)) => a,
        };
        wire.set_write_timeout(Some(options.dimse_timeout));
        let mut session = Session {
            handler,
            options,
            wire: Some(wire),
            info,
            contexts,
            tally: Tally::default(),
        };
        let served = session.run(shutdown).await;
        drop(slot);
        served
    }
    .instrument(span)
    .await
}

/// Read the A-ASSOCIATE-RQ and answer it.
async fn establish<S, H>(
    wire: &mut PduStream<S>,
    first: Result<Pdu, WireError>,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    id: &str,
    handler: &H,
    options: &ScpOptions,
) -> Result<(AssociationInfo, Vec<Context>, Option<Slot>), Served>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: ScpHandler,
{
    let not_established = |why: String| {
        warn!(error = %why, "association could not be established; connection closed");
        Served::NotEstablished(why)
    };
    let rq = match first {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(Pdu::ReleaseRQ) => {
            let _ = wire.write(&Pdu::ReleaseRP).await;
            return Err(not_established("A-RELEASE-RQ before an association".into()));
        }
        Ok(other) => {
            let reason = match other {
                Pdu::Unknown { .. } => AbortRQServiceProviderReason::UnrecognizedPdu,
                _ => AbortRQServiceProviderReason::UnexpectedPdu,
            };
            let _ = wire
                .write(&Pdu::AbortRQ {
                    source: AbortRQSource::ServiceProvider(reason),
                })
                .await;
            return Err(not_established(format!(
                "{} before an association",
                pdu_name(&other)
            )));
        }
        Err(e) => return Err(not_established(e.to_string())),
    };
    let screened = negotiation::screen(&rq).and_then(|()| {
        handler
            .admit(&AssociationRequest {
                local_ae: &options.ae_title,
                calling_ae: rq.calling_ae_title.trim(),
                called_ae: rq.called_ae_title.trim(),
                peer,
                user_identity: negotiation::user_identity(&rq),
                tls: tls.as_ref(),
            })
            .map_err(negotiation::reject_by_user)
    });
    if let Err(rj) = screened {
        warn!(reason = ?rj.source, calling_ae = %rq.calling_ae_title.trim(), tls = tls.is_some(), "association rejected");
        handler.event(Event::Rejected(RejectKind::Refused));
        if let Err(e) = wire.write(&Pdu::AssociationRJ(rj.clone())).await {
            debug!(error = %e, "A-ASSOCIATE-RJ not delivered");
        }
        return Err(Served::Rejected(rj));
    }
    let Some(slot) = options.caller_slots.take(&rq.calling_ae_title) else {
        use dicom_ul::pdu::{
            AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
            AssociationRJSource,
        };
        warn!(calling_ae = %rq.calling_ae_title.trim(), "caller at its association limit: rejecting (local limit exceeded)");
        handler.event(Event::Rejected(RejectKind::Limit));
        let rj = AssociationRJ {
            result: AssociationRJResult::Transient,
            source: AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        };
        if let Err(e) = wire.write(&Pdu::AssociationRJ(rj.clone())).await {
            debug!(error = %e, "A-ASSOCIATE-RJ not delivered");
        }
        return Err(Served::Rejected(rj));
    };
    let accepted = negotiation::accept(
        &rq,
        &Offer {
            max_pdu: crate::wire::clamp_max_pdu(options.max_pdu),
            abstract_syntaxes: &options.abstract_syntaxes,
            transfer_syntaxes: &options.transfer_syntaxes,
            decodable_only: &options.decodable_only,
        },
    );
    wire.write(&Pdu::AssociationAC(accepted.ac))
        .await
        .map_err(|e| not_established(format!("A-ASSOCIATE-AC not sent: {e}")))?;
    wire.set_peer_max(accepted.peer_max_pdu);
    let contexts = accepted
        .contexts
        .into_iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| Context {
            id: pc.id,
            abstract_syntax: pc.abstract_syntax,
            transfer_syntax: pc.transfer_syntax,
        })
        .collect();
    let info = AssociationInfo {
        id: id.to_string(),
        calling_ae: rq.calling_ae_title.trim().to_string(),
        called_ae: rq.called_ae_title.trim().to_string(),
        peer,
        tls,
    };
    Ok((info, contexts, slot))
}

struct Session<S, H> {
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    /// The connection, until the association is over.
    wire: Option<PduStream<S>>,
    info: AssociationInfo,
    contexts: Vec<Context>,
    tally: Tally,
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: ScpHandler,
{
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Served {
        let started = Instant::now();
        info!(
            calling_ae = %self.info.calling_ae,
            called_ae = %self.info.called_ae,
            contexts = self.contexts.len(),
            tls = self.info.tls.as_ref().map(|t| t.protocol.as_str()).unwrap_or("none"),
            "association accepted"
        );
        self.handler.event(Event::Accepted);
        if let Err(e) = self.handler.begin(&self.info).await {
            warn!(error = %e, "association not journaled: aborting it");
            self.abort().await;
            return Served::NotJournaled(e);
        }
        let ending = self.dimse_loop(&mut shutdown).await;
        if let Ending::Aborted(_) = ending {
            self.abort().await;
        }
        self.handler.end(&self.info, &ending, &self.tally).await;
        info!(
            calling_ae = %self.info.calling_ae,
            instances = self.tally.stored,
            failed = self.tally.failed,
            echoes = self.tally.echoes,
            bytes = self.tally.bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome = %ending,
            "association ended"
        );
        Served::Ended(ending, self.tally.clone())
    }

    /// A-ABORT (service provider, reason not specified), then close.
    async fn abort(&mut self) {
        if let Some(mut w) = self.wire.take() {
            let _ = w
                .write(&Pdu::AbortRQ {
                    source: AbortRQSource::ServiceProvider(
                        AbortRQServiceProviderReason::ReasonNotSpecified,
                    ),
                })
                .await;
            w.shutdown().await;
        }
    }

    async fn receive(&mut self, limit: std::time::Duration) -> Result<Frame, String> {
        let wire = self.wire.as_mut().ok_or("association closed")?;
        match wire.read_frame_within(limit).await {
            Ok(frame) => Ok(frame),
            Err(e @ WireError::Timeout(_)) => Err(e.to_string()),
            Err(e) => Err(format!("receive failed: {e}")),
        }
    }

    async fn send_command(&mut self, pc: u8, bytes: Vec<u8>) -> Result<(), String> {
        let wire = self.wire.as_mut().ok_or("association closed")?;
        wire.write(&dimse::command_pdu(pc, bytes))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    async fn dimse_loop(&mut self, shutdown: &mut watch::Receiver<bool>) -> Ending {
        let (idle, dimse_limit) = (self.options.idle_timeout, self.options.dimse_timeout);
        let mut command: Vec<u8> = Vec::new();
        let mut command_pc: Option<u8> = None;
        let mut pending: Option<PendingStore<H::Sink>> = None;
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
                Frame::PData(values) => {
                    for pv in values {
                        let step = if pv.command {
                            if pending.is_some() {
                                Err("command fragment while a data set was expected".to_string())
                            } else if command_pc.is_some_and(|pc| pc != pv.presentation_context_id)
                            {
                                Err("command fragments on two presentation contexts".to_string())
                            } else {
                                command_pc = Some(pv.presentation_context_id);
                                if let Some(w) = self.wire.as_ref() {
                                    command.extend_from_slice(w.payload(&pv));
                                }
                                if command.len() > MAX_COMMAND_SET {
                                    Err("command set larger than 64 KiB".to_string())
                                } else if pv.last {
                                    let bytes = std::mem::take(&mut command);
                                    let pc =
                                        command_pc.take().unwrap_or(pv.presentation_context_id);
                                    self.on_command(pc, &bytes).await.map(|p| pending = p)
                                } else {
                                    Ok(())
                                }
                            }
                        } else {
                            match pending.as_mut() {
                                None => Err("data fragment without a command".to_string()),
                                Some(p) if p.pc != pv.presentation_context_id => {
                                    Err("data fragment on another presentation context".to_string())
                                }
                                Some(p) => {
                                    // the fragment goes from the socket's buffer to the sink as is
                                    let data = self
                                        .wire
                                        .as_ref()
                                        .map(|w| w.payload(&pv))
                                        .unwrap_or_default();
                                    self.tally.bytes += data.len() as i64;
                                    self.handler.event(Event::Received(data.len() as u64));
                                    if let Ok(sink) = p.target.as_mut() {
                                        sink.write(data);
                                    }
                                    if pv.last {
                                        match pending.take() {
                                            Some(p) => self.finish_store(p).await,
                                            None => Ok(()),
                                        }
                                    } else {
                                        Ok(())
                                    }
                                }
                            }
                        };
                        if let Err(why) = step {
                            return Ending::Aborted(why);
                        }
                    }
                }
                Frame::Other(Pdu::ReleaseRQ) => {
                    if pending.is_some() || !command.is_empty() {
                        warn!("release requested in the middle of a message; the partial instance is dropped");
                    }
                    if let Some(mut w) = self.wire.take() {
                        let _ = w.write(&Pdu::ReleaseRP).await;
                        w.shutdown().await;
                    }
                    return Ending::Released;
                }
                Frame::Other(Pdu::AbortRQ { source }) => {
                    debug!(?source, "peer aborted");
                    self.wire.take();
                    return Ending::PeerAborted;
                }
                Frame::Other(other) => {
                    return Ending::Aborted(format!("unexpected PDU {}", pdu_name(&other)));
                }
            }
        }
    }

    fn context(&self, pc: u8) -> Option<&Context> {
        self.contexts.iter().find(|c| c.id == pc)
    }

    /// A complete command set arrived; returns the store that now expects its data set, if any.
    async fn on_command(
        &mut self,
        pc: u8,
        bytes: &[u8],
    ) -> Result<Option<PendingStore<H::Sink>>, String> {
        let cmd: Command = dimse::decode(bytes).map_err(|e| format!("bad command set: {e}"))?;
        let ctx = self.context(pc).cloned().ok_or_else(|| {
            format!("command on presentation context {pc}, which was not accepted")
        })?;
        match cmd.field {
            command_field::C_ECHO_RQ => {
                self.tally.echoes += 1;
                self.handler.event(Event::Echo);
                let rsp = dimse::encode_response(
                    command_field::C_ECHO_RSP,
                    cmd.message_id,
                    crate::sop::VERIFICATION,
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

    fn start_store(&self, ctx: &Context, cmd: &Command) -> PendingStore<H::Sink> {
        let sop_class = cmd.affected_sop_class.clone().unwrap_or_default();
        let sop_instance = cmd.affected_sop_instance.clone().unwrap_or_default();
        let target = if sop_class != ctx.abstract_syntax {
            Err(StoreStatus::failure(
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("SOP class {sop_class} not negotiated on this context"),
            ))
        } else {
            self.handler.open(
                &self.info,
                &Announced {
                    sop_class: sop_class.clone(),
                    sop_instance: sop_instance.clone(),
                    transfer_syntax: ctx.transfer_syntax.clone(),
                },
            )
        };
        PendingStore {
            pc: ctx.id,
            message_id: cmd.message_id,
            sop_class,
            sop_instance,
            target,
        }
    }

    /// The data set is complete: let the sink file it, then answer.
    async fn finish_store(&mut self, p: PendingStore<H::Sink>) -> Result<(), String> {
        let started = Instant::now();
        let answer = match p.target {
            Err(refusal) => refusal,
            Ok(sink) => sink.finish().await,
        };
        let stored = !dimse::is_failure(answer.status);
        self.handler.event(Event::Instance { stored });
        if stored {
            self.tally.stored += 1;
            debug!(sop = %p.sop_instance, ms = started.elapsed().as_secs_f64() * 1e3, "stored");
        } else {
            self.tally.failed += 1;
            warn!(
                sop = %p.sop_instance,
                status = format!("0x{:04X}", answer.status),
                reason = %answer.comment.as_deref().unwrap_or(""),
                "instance refused"
            );
        }
        let rsp = dimse::encode_response(
            command_field::C_STORE_RSP,
            p.message_id,
            &p.sop_class,
            Some(&p.sop_instance),
            answer.status,
            answer.comment.as_deref(),
        );
        self.send_command(p.pc, rsp).await
    }
}
