//! The DICOM listener: owns the accept loop, the limit on concurrent associations and shutdown.
//!
//! Each accepted connection gets its own task ([`super::association::serve_connection`]) holding a
//! semaphore permit. When every permit is taken, the connection is still read up to its A-ASSOCIATE-RQ
//! and answered with A-ASSOCIATE-RJ (transient, service provider: local limit exceeded), so the sender
//! knows to retry rather than seeing a reset; the same, with temporary congestion, while the index
//! database does not answer (nothing could be filed). On shutdown the loop stops accepting and waits (bounded)
//! for the associations in flight, which finish the instance they are receiving and then end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason as Reason;

use crate::config::secs;
use crate::metrics::Rejection;
use crate::node::Node;

/// How long shutdown waits for in-flight associations before cutting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Accept connections until `shutdown` turns true, then drain.
pub async fn run(node: Arc<Node>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let limit = node.settings.dicom.max_associations;
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let node = node.clone();
                        let sd = shutdown.clone();
                        tasks.spawn(async move {
                            // nothing can be filed while the index is unreachable (a database server
                            // restarting): say so at once, so the sender retries later
                            if !node.index.unavailable() && node.index.ping(INDEX_CHECK).await {
                                super::association::serve_connection(node, socket, peer, sd).await;
                            } else {
                                warn!(%peer, "index unavailable: rejecting (temporary congestion)");
                                crate::metrics::metrics().association_rejected(Rejection::IndexUnavailable);
                                let artim = secs(node.settings.dicom.artim_timeout_s);
                                reject_transient(socket, peer, artim, Reason::TemporaryCongestion).await;
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        warn!(%peer, limit, "association limit reached: rejecting (local limit exceeded)");
                        crate::metrics::metrics().association_rejected(Rejection::Limit);
                        let artim = secs(node.settings.dicom.artim_timeout_s);
                        tasks.spawn(reject_transient(socket, peer, artim, Reason::LocalLimitExceeded));
                    }
                },
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
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
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

/// How long the index may take to answer before a new association is turned away.
const INDEX_CHECK: Duration = Duration::from_secs(5);

/// Read the A-ASSOCIATE-RQ of a connection we cannot serve now and answer A-ASSOCIATE-RJ (transient,
/// service provider, `reason`).
async fn reject_transient(
    mut socket: TcpStream,
    peer: SocketAddr,
    artim: Duration,
    reason: Reason,
) {
    use dicom_ul::pdu::{AssociationRJ, AssociationRJResult, AssociationRJSource};
    let read = async {
        let mut header = [0u8; 6];
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        if header[0] != 0x01 || len > 1 << 20 {
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
