//! The DICOM listener: owns the accept loop, the limit on concurrent associations and shutdown.
//!
//! Each accepted connection gets its own task ([`crate::association::serve`]) holding a semaphore
//! permit. When every permit is taken, the connection is still read up to its A-ASSOCIATE-RQ and
//! answered with A-ASSOCIATE-RJ (transient, service provider: local limit exceeded), so the sender knows
//! to retry rather than seeing a reset; the same, with temporary congestion, while the application says
//! it is not ready (e.g. its index database does not answer: nothing could be filed). On shutdown the
//! loop stops accepting and waits (bounded) for the associations in flight, which finish the instance
//! they are receiving and then end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason as Reason;

use crate::association;
use crate::handler::{Event, RejectKind, ScpHandler};
use crate::options::ScpOptions;

/// Largest A-ASSOCIATE-RQ read from a connection that is turned away.
const MAX_REJECTED_RQ: usize = 1 << 20;

/// Accept connections until `shutdown` turns true, then drain.
pub async fn run<H: ScpHandler>(
    handler: Arc<H>,
    options: Arc<ScpOptions>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = options.max_associations;
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (handler, options, sd) = (handler.clone(), options.clone(), shutdown.clone());
                            tasks.spawn(async move {
                                match handler.ready().await {
                                    Ok(()) => {
                                        association::serve(socket, peer, handler, options, sd).await;
                                    }
                                    Err(why) => {
                                        warn!(%peer, reason = %why, "not ready: rejecting (temporary congestion)");
                                        handler.event(Event::Rejected(RejectKind::NotReady));
                                        reject_transient(socket, peer, options.artim_timeout, Reason::TemporaryCongestion).await;
                                    }
                                }
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            warn!(%peer, limit, "association limit reached: rejecting (local limit exceeded)");
                            handler.event(Event::Rejected(RejectKind::Limit));
                            tasks.spawn(reject_transient(socket, peer, options.artim_timeout, Reason::LocalLimitExceeded));
                        }
                    }
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

/// Read the A-ASSOCIATE-RQ of a connection we cannot serve now and answer A-ASSOCIATE-RJ (transient,
/// service provider, `reason`).
pub async fn reject_transient<S>(mut socket: S, peer: SocketAddr, artim: Duration, reason: Reason)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use dicom_ul::pdu::{AssociationRJ, AssociationRJResult, AssociationRJSource};
    let read = async {
        let mut header = [0u8; 6];
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        if header[0] != 0x01 || len > MAX_REJECTED_RQ {
            return Err(std::io::Error::other("not an A-ASSOCIATE-RQ"));
        }
        let mut body = vec![0u8; len];
        socket.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(())
    };
    if !matches!(tokio::time::timeout(artim, read).await, Ok(Ok(()))) {
        return;
    }
    let why = format!("{reason:?}");
    let rj = dicom_ul::Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(reason),
    });
    let mut out = Vec::new();
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        let _ = tokio::time::timeout(artim, socket.write_all(&out)).await;
        let _ = socket.shutdown().await;
    }
    info!(%peer, reason = %why, "association rejected (transient)");
}
