//! The composition root: `serve` opens the store and index, reconciles them, builds the C-STORE SCP
//! source ([`crate::source::scp::StoreScp`]) and hands it to `segnode-net`'s listener with the DICOM
//! options taken from the configuration, starts the tracker, routing, workers, dispatch and HTTP, and
//! shuts all of it down on SIGINT / SIGTERM. `work` runs the pipelines only.

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::info;

use crate::config::{secs, Settings};
use crate::dispatch::Dispatcher;
use crate::routing::route_completed;
use crate::series::tracker::Tracker;
use crate::source::access::AccessPolicy;
use crate::source::scp::StoreScp;
use crate::store::files::{InstanceStore, StoreError};
use crate::store::ingest::{Ingest, IngestError};
use crate::worker::Workers;
use segnode_db::{Index, IndexError, Topic};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Shared state of a node.
pub struct Node {
    /// This process's name among those sharing the database (`node.name`).
    pub name: String,
    pub settings: Arc<Settings>,
    pub store: Arc<InstanceStore>,
    pub index: Index,
    pub ingest: Arc<Ingest>,
    pub policy: Arc<AccessPolicy>,
    /// Wakes the completion tracker (an association ended).
    pub tracker_wake: Arc<Notify>,
}

impl Node {
    /// Open the store and index and reconcile them.
    pub async fn open(settings: Settings) -> Result<Node, NodeError> {
        let name = settings.node_name();
        let store = Arc::new(InstanceStore::open(
            &settings.storage.dir,
            &name,
            settings.storage.min_free_mb,
        )?);
        let index = Index::open_with(&settings.database.db_options()).await?;
        let orphaned = index.close_orphaned_associations(&name).await?;
        if orphaned > 0 {
            info!(
                orphaned,
                node = %name,
                "associations left open by a previous run marked aborted"
            );
        }
        let ingest = Arc::new(Ingest {
            store: store.clone(),
            index: index.clone(),
        });
        ingest.reconcile().await?;
        Ok(Node {
            name,
            policy: Arc::new(AccessPolicy::from_settings(&settings.dicom)),
            settings: Arc::new(settings),
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
    let http = match node.settings.http.port {
        0 => None,
        port => Some(console(&node, port).await?),
    };
    let (tx, rx) = watch::channel(false);
    node.index.listen();
    let mut background = tokio::task::JoinSet::new();
    if let Some((l, router)) = http {
        background.spawn(crate::http::serve(l, router, rx.clone()));
    }
    let tracker = Tracker::new(
        node.index.clone(),
        node.settings.completion.clone(),
        node.tracker_wake.clone(),
    );
    background.spawn(tracker.run(rx.clone()));
    background.spawn(routing_loop(node.clone(), rx.clone()));
    if node.settings.workers.enabled {
        let workers = Arc::new(Workers {
            index: node.index.clone(),
            settings: node.settings.clone(),
            store_root: node.store.root().to_path_buf(),
        });
        background.spawn(workers.run(rx.clone()));
    }
    background.spawn(
        Dispatcher {
            index: node.index.clone(),
            settings: node.settings.clone(),
        }
        .run(rx.clone()),
    );
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested: no new associations; finishing those in flight");
        let _ = tx.send(true);
    });
    info!(
        node = %node.name,
        ae_title = %node.settings.dicom.ae_title,
        addr = %addr,
        database = ?node.index.backend(),
        store = %node.settings.storage.dir.display(),
        "segnode listening"
    );
    let scp = Arc::new(StoreScp {
        node: node.name.clone(),
        store: node.store.clone(),
        index: node.index.clone(),
        ingest: node.ingest.clone(),
        policy: node.policy.clone(),
        tracker_wake: node.tracker_wake.clone(),
    });
    segnode_net::listener::run(scp, Arc::new(scp_options(&node.settings)), listener, rx).await;
    // background tasks stop at the shutdown signal; a running pipeline is left to its lease
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    node.index.close().await;
    info!("segnode stopped");
    Ok(())
}

/// Bind the console and build its router: the admin token is read, or generated at the first start
/// on a loopback address (a non-loopback bind without a token file stops the start).
async fn console(
    node: &Node,
    port: u16,
) -> Result<(TcpListener, axum::Router), crate::http::HttpError> {
    let h = &node.settings.http;
    // validated at load: an IP address
    let bind: std::net::IpAddr = h
        .bind
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let (token, created) = crate::http::AdminToken::load_or_create(&h.admin_token_file, bind)?;
    if created {
        info!(file = %h.admin_token_file.display(), "admin token generated (mode 0600): actions in the console need it");
    }
    let listener = crate::http::bind(&h.bind, port).await?;
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let console = crate::http::Console::new(
        node.name.clone(),
        node.settings.clone(),
        node.index.clone(),
        node.store.root().to_path_buf(),
        Some(token),
        bound,
    );
    Ok((listener, crate::http::console_router(console)))
}

/// The DICOM layer's options from the `[dicom]` settings.
pub fn scp_options(settings: &Settings) -> segnode_net::ScpOptions {
    let d = &settings.dicom;
    segnode_net::ScpOptions {
        max_pdu: d.max_pdu,
        artim_timeout: secs(d.artim_timeout_s),
        idle_timeout: secs(d.idle_timeout_s),
        dimse_timeout: secs(d.dimse_timeout_s),
        max_associations: d.max_associations,
        ..segnode_net::ScpOptions::new(d.ae_title.as_str())
    }
}

/// Route completed series into jobs, woken when a series completes (here or, on PostgreSQL, at another
/// receiver) and polling as a fallback.
async fn routing_loop(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let router = match node.settings.router() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "routing rules invalid");
            return;
        }
    };
    let poll = std::time::Duration::from_millis(node.settings.completion.poll_ms * 5);
    let mut completed = node.index.wakeups().subscribe(Topic::Series);
    loop {
        completed.arm();
        if let Err(e) = route_completed(&node.index, &router).await {
            tracing::warn!(error = %e, "routing failed; retrying");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = completed.wait(poll) => {}
        }
    }
}

/// Run only the pipelines (a `segnode worker` process): same database and storage as the receivers.
pub async fn work(settings: Settings) -> Result<(), NodeError> {
    let settings = Arc::new(settings);
    let index = Index::open_with(&settings.database.db_options()).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    index.listen();
    if settings.http.port != 0 {
        // a worker beside a receiver on one machine finds the default port taken: it runs without
        // its monitoring endpoint rather than not at all (give it a port of its own to have one)
        match crate::http::bind(&settings.http.bind, settings.http.port).await {
            Ok(l) => {
                tokio::spawn(crate::http::serve(
                    l,
                    crate::http::monitoring_router(index.clone(), settings.node_name()),
                    rx.clone(),
                ));
            }
            Err(e) => tracing::warn!(error = %e, "worker: no /health and /metrics endpoint"),
        }
    }
    let workers = Arc::new(Workers {
        index: index.clone(),
        settings: settings.clone(),
        store_root: settings.storage.dir.clone(),
    });
    info!(
        node = %settings.node_name(),
        database = ?index.backend(),
        pipelines = ?crate::worker::configured_pipelines(&settings),
        "segnode worker running"
    );
    workers.run(rx).await;
    index.close().await;
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
