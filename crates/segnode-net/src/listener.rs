//! The DICOM listener: owns the accept loop, the limits, the TLS handshake and shutdown.
//!
//! A connection goes through two phases. **Pending**: from accept until its A-ASSOCIATE-RQ has been
//! read — the TLS handshake (on a TLS listener) and the first PDU, together within
//! [`ScpOptions::handshake_timeout`] (or the ARTIM timeout, when shorter). A pending connection holds a place in the [`PendingSet`] (bounded
//! in total and per peer address, the oldest evicted when full), never an association slot, so idle or
//! half-open connections cannot lock real senders out. **Association**: once a valid A-ASSOCIATE-RQ
//! arrived, the connection takes one of the `max_associations` permits for the rest of its life and is
//! served by [`crate::association::serve_first`]. When every permit is taken the request is answered
//! A-ASSOCIATE-RJ (transient, service provider: local limit exceeded), so the sender knows to retry
//! rather than seeing a reset; the same, with temporary congestion, while the application says it is
//! not ready (e.g. its index database does not answer: nothing could be filed). A request the
//! application refuses (unknown AE title) gives its permit back at once.
//!
//! Several listeners (the plain port and the TLS port) share one [`Gate`]: one association limit, one
//! pending set. On shutdown each loop stops accepting and waits (bounded) for the associations in
//! flight, which finish the instance they are receiving and then end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason as Reason;
use dicom_ul::Pdu;

use crate::association;
use crate::handler::{Event, HandshakeEnd, RejectKind, ScpHandler, TlsPeer};
use crate::options::ScpOptions;
use crate::pending::{PendingLimits, PendingSet, Ticket};
use crate::tls::{self, ServerTls};
use crate::wire::PduStream;

/// What a listener's connections speak.
#[derive(Clone)]
pub enum Transport {
    /// DICOM over plain TCP.
    Plain,
    /// DICOM over TLS (the configuration can be reloaded while the listener runs).
    Tls(Arc<ServerTls>),
}

/// The limits shared by every listener of a node: association permits and the pending set.
#[derive(Clone)]
pub struct Gate {
    associations: Arc<Semaphore>,
    pending: Arc<PendingSet>,
}

impl Gate {
    pub fn new(options: &ScpOptions) -> Gate {
        Gate {
            associations: Arc::new(Semaphore::new(options.max_associations)),
            pending: PendingSet::new(PendingLimits {
                total: options.max_pending,
                per_peer: options.max_pending_per_peer,
            }),
        }
    }

    /// Connections in their handshake now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Association permits free now.
    pub fn free_associations(&self) -> usize {
        self.associations.available_permits()
    }
}

/// Accept plain connections until `shutdown` turns true, then drain (one listener, its own limits).
pub async fn run<H: ScpHandler>(
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let gate = Gate::new(&options);
    run_with(handler, options, listener, Transport::Plain, gate, shutdown).await
}

/// Accept connections speaking `transport` until `shutdown` turns true, then drain; the limits are
/// `gate`'s (shared with the node's other listeners).
pub async fn run_with<H: ScpHandler>(
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    listener: TcpListener,
    transport: Transport,
    gate: Gate,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let (ticket, evicted) = gate.pending.admit(peer.ip());
                    if let Some(e) = evicted {
                        debug!(%peer, evicted_from = %e.peer, "pending connections at their bound: the oldest evicted");
                    }
                    tasks.spawn(connection(
                        socket,
                        peer,
                        ticket,
                        handler.clone(),
                        options.clone(),
                        transport.clone(),
                        gate.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    info!(
        in_flight = tasks.len(),
        "listener stopped; waiting for associations in flight"
    );
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "associations still open after the grace period: cutting them"
        );
        tasks.abort_all();
    }
}

/// One accepted connection: its handshake phase under `ticket`, then its association.
#[allow(clippy::too_many_arguments)]
async fn connection<H: ScpHandler>(
    socket: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    transport: Transport,
    gate: Gate,
    shutdown: watch::Receiver<bool>,
) {
    // the ARTIM timer bounds the wait for the A-ASSOCIATE-RQ too (PS3.8 9.1.5), when it is the shorter
    let deadline =
        tokio::time::Instant::now() + options.handshake_timeout.min(options.artim_timeout);
    let ended = |end: HandshakeEnd| handler.event(Event::Handshake { peer, end });
    match transport {
        Transport::Plain => {
            after_handshake(
                socket, peer, None, deadline, ticket, handler, options, gate, shutdown,
            )
            .await
        }
        Transport::Tls(config) => {
            let accept = tokio::time::timeout_at(deadline, config.acceptor().accept(socket));
            let stream = tokio::select! {
                _ = ticket.evicted() => return ended(HandshakeEnd::Evicted),
                r = accept => match r {
                    Err(_) => {
                        debug!(%peer, "no TLS handshake within the handshake timeout");
                        return ended(HandshakeEnd::TimedOut);
                    }
                    Ok(Err(e)) => {
                        warn!(%peer, error = %e, "TLS handshake failed; connection closed");
                        return ended(HandshakeEnd::TlsFailed);
                    }
                    Ok(Ok(s)) => s,
                },
            };
            let identity = tls::peer_of(stream.get_ref().1);
            after_handshake(
                stream,
                peer,
                Some(identity),
                deadline,
                ticket,
                handler,
                options,
                gate,
                shutdown,
            )
            .await
        }
    }
}

/// Read the first PDU before `deadline`; an A-ASSOCIATE-RQ gets an association permit (or
/// A-ASSOCIATE-RJ), anything else is answered by the association layer without one.
#[allow(clippy::too_many_arguments)]
async fn after_handshake<S, H>(
    stream: S,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    deadline: tokio::time::Instant,
    mut ticket: Ticket,
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    gate: Gate,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: ScpHandler,
{
    let mut wire = PduStream::new(stream, options.max_pdu);
    let first = tokio::select! {
        _ = ticket.evicted() => {
            handler.event(Event::Handshake { peer, end: HandshakeEnd::Evicted });
            return;
        }
        r = tokio::time::timeout_at(deadline, wire.read()) => match r {
            Err(_) => {
                debug!(%peer, "no A-ASSOCIATE-RQ within the handshake timeout; connection closed");
                handler.event(Event::Handshake { peer, end: HandshakeEnd::TimedOut });
                wire.shutdown().await;
                return;
            }
            Ok(r) => r,
        },
    };
    drop(ticket);
    if !matches!(first, Ok(Pdu::AssociationRQ(_))) {
        // answered (A-ABORT, A-RELEASE-RP) or just closed by the association layer; no permit needed
        association::serve_first(wire, first, peer, tls, handler, options, shutdown).await;
        return;
    }
    let Ok(permit) = gate.associations.clone().try_acquire_owned() else {
        warn!(%peer, limit = options.max_associations, "association limit reached: rejecting (local limit exceeded)");
        handler.event(Event::Rejected(RejectKind::Limit));
        answer_transient(
            &mut wire,
            peer,
            options.artim_timeout,
            Reason::LocalLimitExceeded,
        )
        .await;
        return;
    };
    if let Err(why) = handler.ready().await {
        warn!(%peer, reason = %why, "not ready: rejecting (temporary congestion)");
        handler.event(Event::Rejected(RejectKind::NotReady));
        answer_transient(
            &mut wire,
            peer,
            options.artim_timeout,
            Reason::TemporaryCongestion,
        )
        .await;
        return;
    }
    association::serve_first(wire, first, peer, tls, handler, options, shutdown).await;
    drop(permit);
}

/// Answer an A-ASSOCIATE-RQ already read with A-ASSOCIATE-RJ (transient, service provider, `reason`).
async fn answer_transient<S>(
    wire: &mut PduStream<S>,
    peer: SocketAddr,
    limit: Duration,
    reason: Reason,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use dicom_ul::pdu::{AssociationRJ, AssociationRJResult, AssociationRJSource};
    let why = format!("{reason:?}");
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(reason),
    });
    wire.set_write_timeout(Some(limit));
    if let Err(e) = wire.write(&rj).await {
        debug!(%peer, error = %e, "A-ASSOCIATE-RJ not delivered");
    }
    wire.shutdown().await;
    info!(%peer, reason = %why, "association rejected (transient)");
}
