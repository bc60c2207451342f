//! A running node: the shared state every association and background task uses, and `serve`, which
//! opens the store and index, reconciles them, starts the tracker and the listener, and shuts all of
//! it down on SIGINT / SIGTERM.

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::info;

use crate::config::Settings;
use crate::net::access::AccessPolicy;
use crate::series::tracker::Tracker;
use crate::store::files::{InstanceStore, StoreError};
use crate::store::index::{Index, IndexError};
use crate::store::ingest::{Ingest, IngestError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Shared state of a node.
pub struct Node {
    pub settings: Settings,
    pub store: Arc<InstanceStore>,
    pub index: Index,
    pub ingest: Ingest,
    pub policy: Arc<AccessPolicy>,
    /// Wakes the completion tracker (an association ended).
    pub tracker_wake: Arc<Notify>,
}

impl Node {
    /// Open the store and index and reconcile them.
    pub async fn open(settings: Settings) -> Result<Node, NodeError> {
        let store = Arc::new(InstanceStore::open(
            &settings.storage.dir,
            settings.storage.min_free_mb,
        )?);
        let index = Index::open(&settings.database.url).await?;
        let orphaned = index.close_orphaned_associations().await?;
        if orphaned > 0 {
            info!(
                orphaned,
                "associations left open by a previous run marked aborted"
            );
        }
        let ingest = Ingest {
            store: store.clone(),
            index: index.clone(),
        };
        ingest.reconcile().await?;
        Ok(Node {
            policy: Arc::new(AccessPolicy::from_settings(&settings.dicom)),
            settings,
            store,
            index,
            ingest,
            tracker_wake: Arc::new(Notify::new()),
        })
    }
}

/// Run the node until SIGINT / SIGTERM.
pub async fn serve(settings: Settings) -> Result<(), NodeError> {
    let addr = format!("{}:{}", settings.dicom.bind, settings.dicom.port);
    let node = Arc::new(Node::open(settings).await?);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let (tx, rx) = watch::channel(false);
    let tracker = Tracker::new(
        node.index.clone(),
        node.settings.completion.clone(),
        node.tracker_wake.clone(),
    );
    let tracker_task = tokio::spawn(tracker.run(rx.clone()));
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested: no new associations; finishing those in flight");
        let _ = tx.send(true);
    });
    info!(
        ae_title = %node.settings.dicom.ae_title,
        addr = %addr,
        store = %node.settings.storage.dir.display(),
        "segnode listening"
    );
    crate::net::listener::run(node.clone(), listener, rx).await;
    let _ = tracker_task.await;
    node.index.close().await;
    info!("segnode stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
