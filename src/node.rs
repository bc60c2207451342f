//! The composition root: `serve` opens the store and index, reconciles them, builds the C-STORE SCP
//! source ([`crate::source::scp::StoreScp`]) and hands it to `segnode-net`'s listener with the DICOM
//! options taken from the configuration (a plain and / or a TLS listener sharing one association limit
//! and one pending-handshake bound), starts the tracker, routing, workers, dispatch and HTTP, opens the
//! audit trail, reloads the TLS certificates on SIGHUP, and shuts all of it down on SIGINT / SIGTERM.
//! `work` runs the pipelines only.

use std::path::PathBuf;
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
use crate::store::materialise::{self, journal_dir, BatchLimits, MaterialiseError, Materialiser};
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
    #[error("ingest journal: {0}")]
    Journal(#[from] MaterialiseError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("DICOM TLS: {0}")]
    Tls(#[from] segnode_net::tls::TlsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
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
    /// Slices of arriving series read ahead for the in-process workers (`workers.read_ahead_mb`).
    pub read_ahead: Option<Arc<crate::readahead::ReadAheadCache>>,
    pub policy: crate::source::access::SharedPolicy,
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
        let read_ahead = read_ahead_for(&settings);
        let on_filed = read_ahead
            .clone()
            .map(|r| r as Arc<dyn crate::store::ingest::FiledHook>);
        // the journal first: what it acknowledged before a crash is filed before anything else
        let journal = if settings.storage.journal {
            let m = Materialiser {
                store: store.clone(),
                index: index.clone(),
                hook: on_filed.clone(),
                runtime: tokio::runtime::Handle::current(),
                limits: BatchLimits::default(),
            };
            let dir = journal_dir(&store);
            let params = settings.storage.journal_params();
            let (filing, read_back) =
                tokio::task::spawn_blocking(move || materialise::recover(&dir, params, m))
                    .await
                    .map_err(|e| IngestError::Internal(e.to_string()))??;
            if read_back > 0 {
                info!(records = read_back, "ingest journal read back");
            }
            Some(filing)
        } else {
            None
        };
        let ingest = Arc::new(Ingest {
            store: store.clone(),
            index: index.clone(),
            on_filed,
            journal,
        });
        ingest.reconcile().await?;
        Ok(Node {
            name,
            policy: Arc::new(std::sync::RwLock::new(Arc::new(
                AccessPolicy::from_settings(&settings.dicom),
            ))),
            settings: Arc::new(settings),
            store,
            index,
            ingest,
            read_ahead,
            tracker_wake: Arc::new(Notify::new()),
        })
    }
}

/// The read-ahead a `serve` process with these settings runs: `None` when its workers are off,
/// `workers.read_ahead_mb` is 0 or the rules do not compile (the node refuses to start then anyway).
fn read_ahead_for(settings: &Settings) -> Option<Arc<crate::readahead::ReadAheadCache>> {
    if !settings.workers.enabled || settings.workers.read_ahead_mb == 0 {
        return None;
    }
    let router = settings.router().ok()?;
    Some(crate::readahead::ReadAheadCache::start(
        settings.workers.read_ahead_mb,
        router,
        crate::worker::configured_pipelines(&settings.clone()),
    ))
}

/// Run the node until SIGINT / SIGTERM.
pub async fn serve(settings: Settings, config_file: Option<PathBuf>) -> Result<(), NodeError> {
    // the ONNX models this node runs fit their manifests: refused at start, not at the first job
    settings.check_models()?;
    crate::audit::open(
        &settings.audit.path,
        &settings.audit.syslog,
        &settings.node_name(),
        &settings.dicom.ae_title,
    )?;
    let addr = format!("{}:{}", settings.dicom.bind, settings.dicom.port);
    let tls_addr = format!("{}:{}", settings.dicom.bind, settings.dicom.tls.port);
    let node = Arc::new(Node::open(settings).await?);
    // reload without restart: SIGHUP or the console read the configuration again
    let live = Arc::new(crate::reload::Live::new(node.settings.clone(), config_file));
    let bind = |addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })
    };
    let listener = match node.settings.dicom.port {
        0 => None,
        _ => Some(bind(addr.clone()).await?),
    };
    let tls = match node.settings.dicom.tls.files() {
        None => None,
        Some(files) => Some((
            bind(tls_addr.clone()).await?,
            Arc::new(segnode_net::tls::ServerTls::load(files)?),
        )),
    };
    crate::audit::record(
        "config_loaded",
        serde_json::json!({
            "ae_title": node.settings.dicom.ae_title,
            "dicom_port": node.settings.dicom.port,
            "tls_port": node.settings.dicom.tls.port,
            "mutual_tls": !node.settings.dicom.tls.client_ca.as_os_str().is_empty(),
            "accept_any": node.settings.dicom.accept_any,
            "callers": node.settings.dicom.callers.iter().map(|c| serde_json::json!({
                "ae_title": c.ae_title, "host": c.host, "require_tls": c.require_tls,
            })).collect::<Vec<_>>(),
            "destinations": node.settings.destinations.iter().map(|d| serde_json::json!({
                "name": d.name, "ae_title": d.ae_title,
                "address": format!("{}:{}", d.host, d.port), "tls": d.tls,
            })).collect::<Vec<_>>(),
        }),
    );
    let http = match node.settings.http.port {
        0 => None,
        port => Some(console(&node, port, live.clone()).await?),
    };
    let (tx, rx) = watch::channel(false);
    node.index.listen();
    let mut background = tokio::task::JoinSet::new();
    background.spawn(crate::reload::on_sighup(live.clone(), rx.clone()));
    background.spawn(follow_policy(node.clone(), live.subscribe(), rx.clone()));
    background.spawn(heartbeat(
        node.index.clone(),
        node.name.clone(),
        "serve",
        rx.clone(),
    ));
    if let Some((l, router)) = http {
        background.spawn(crate::http::serve(l, router, rx.clone()));
    }
    let tracker = Tracker::new(
        node.index.clone(),
        node.settings.completion.clone(),
        node.tracker_wake.clone(),
    )
    .with_in_flight(node.ingest.journal.clone());
    background.spawn(tracker.run(rx.clone()));
    background.spawn(routing_loop(node.clone(), live.subscribe(), rx.clone()));
    if node.settings.workers.enabled {
        let workers = Arc::new(Workers {
            index: node.index.clone(),
            settings: node.settings.clone(),
            store_root: node.store.root().to_path_buf(),
            live: Some(live.subscribe()),
            read_ahead: node.read_ahead.clone(),
        });
        background.spawn(workers.run(rx.clone()));
    }
    background.spawn(
        crate::retention::Retention {
            index: node.index.clone(),
            settings: node.settings.clone(),
            store_root: node.store.root().to_path_buf(),
        }
        .run(rx.clone()),
    );
    background.spawn(dispatch_following(
        node.index.clone(),
        live.subscribe(),
        rx.clone(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested: no new associations; finishing those in flight");
        let _ = tx.send(true);
    });
    background.spawn(watch_certificates(
        tls.as_ref().map(|(_, t)| t.clone()),
        node.settings.clone(),
        rx.clone(),
    ));
    info!(
        node = %node.name,
        ae_title = %node.settings.dicom.ae_title,
        addr = %if listener.is_some() { addr.as_str() } else { "off" },
        tls_addr = %if tls.is_some() { tls_addr.as_str() } else { "off" },
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
        journal_max_bytes: node.settings.storage.journal_max_bytes(),
    });
    let options = Arc::new(scp_options(&node.settings));
    let gate = segnode_net::listener::Gate::new(&options);
    let plain = listener.map(|l| {
        segnode_net::listener::run_with(
            scp.clone(),
            options.clone(),
            l,
            segnode_net::listener::Transport::Plain,
            gate.clone(),
            rx.clone(),
        )
    });
    let secure = tls.map(|(l, config)| {
        segnode_net::listener::run_with(
            scp.clone(),
            options.clone(),
            l,
            segnode_net::listener::Transport::Tls(config),
            gate.clone(),
            rx.clone(),
        )
    });
    tokio::join!(
        async {
            if let Some(p) = plain {
                p.await
            }
        },
        async {
            if let Some(s) = secure {
                s.await
            }
        }
    );
    // background tasks stop at the shutdown signal; a running pipeline is left to its lease
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    if let Some(journal) = &node.ingest.journal {
        // what the journal holds is filed now rather than at the next start
        journal.stop(std::time::Duration::from_secs(30)).await;
    }
    node.index.close().await;
    info!("segnode stopped");
    Ok(())
}

/// Bind the console and build its router: the admin token is read, or generated at the first start
/// on a loopback address (a non-loopback bind without a token file stops the start).
async fn console(
    node: &Node,
    port: u16,
    live: Arc<crate::reload::Live>,
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
    )
    .with_live(live);
    Ok((listener, crate::http::console_router(console)))
}

/// The DICOM layer's options from the `[dicom]` settings.
pub fn scp_options(settings: &Settings) -> segnode_net::ScpOptions {
    let d = &settings.dicom;
    segnode_net::ScpOptions {
        max_pdu: d.max_pdu,
        artim_timeout: secs(d.artim_timeout_s),
        handshake_timeout: secs(d.handshake_timeout_s),
        max_pending: d.max_pending,
        max_pending_per_peer: d.max_pending_per_peer,
        idle_timeout: secs(d.idle_timeout_s),
        dimse_timeout: secs(d.dimse_timeout_s),
        max_associations: d.max_associations,
        caller_slots: segnode_net::slots::CallerSlots::new(
            d.callers
                .iter()
                .filter_map(|c| Some((c.ae_title.clone(), c.max_associations?))),
        ),
        ..segnode_net::ScpOptions::new(d.ae_title.as_str())
    }
}

/// Route completed series into jobs, woken when a series completes (here or, on PostgreSQL, at another
/// receiver) and polling as a fallback.
async fn routing_loop(
    node: Arc<Node>,
    mut live: watch::Receiver<Arc<Settings>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let compile = |s: &Settings| match s.router() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "routing rules invalid");
            None
        }
    };
    let Some(mut router) = compile(&live.borrow_and_update()) else {
        return;
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
            Ok(()) = live.changed() => {
                // a reload validated the rules already; keep the old router if not
                if let Some(r) = compile(&live.borrow_and_update()) {
                    router = r;
                    info!("routing rules taken over from the reloaded configuration");
                }
            }
        }
    }
}

/// Keep the access policy in step with the running configuration (new associations see the new one).
async fn follow_policy(
    node: Arc<Node>,
    mut live: watch::Receiver<Arc<Settings>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Ok(()) = live.changed() => {
                let policy = Arc::new(AccessPolicy::from_settings(&live.borrow_and_update().dicom));
                *node.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
            }
        }
    }
}

/// Run the dispatcher with the running configuration; after a reload, stop it between batches (a send
/// in flight finishes) and start it again with the new destinations.
async fn dispatch_following(
    index: Index,
    mut live: watch::Receiver<Arc<Settings>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let settings = live.borrow_and_update().clone();
        let (stop, stopped) = watch::channel(false);
        let run = tokio::spawn(
            Dispatcher {
                index: index.clone(),
                settings,
            }
            .run(stopped),
        );
        let again = tokio::select! {
            _ = shutdown.changed() => false,
            r = live.changed() => r.is_ok(),
        };
        let _ = stop.send(true);
        let _ = run.await;
        if !again {
            return;
        }
        info!("dispatcher restarted with the reloaded destinations");
    }
}

/// Run only the pipelines (a `segnode worker` process): same database and storage as the receivers.
pub async fn work(settings: Settings) -> Result<(), NodeError> {
    settings.check_models()?;
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
    tokio::spawn(heartbeat(
        index.clone(),
        settings.node_name(),
        "worker",
        rx.clone(),
    ));
    let workers = Arc::new(Workers {
        index: index.clone(),
        settings: settings.clone(),
        store_root: settings.storage.dir.clone(),
        live: None,
        // a worker process receives nothing: nothing is read ahead for it
        read_ahead: None,
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

/// Keep this process's row in `nodes` fresh (every [`segnode_db::nodes::HEARTBEAT_MS`]) until shutdown (a database outage only skips beats).
async fn heartbeat(
    index: Index,
    name: String,
    role: &'static str,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = segnode_db::now_ms();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        segnode_db::nodes::HEARTBEAT_MS as u64,
    ));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                if let Err(e) = index.heartbeat(&name, role, env!("CARGO_PKG_VERSION"), started).await {
                    tracing::debug!(error = %e, "heartbeat not recorded");
                }
            }
        }
    }
}

/// A certificate expiring within this is a warning in the log.
const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Warn about the certificates in use that expire within [`EXPIRY_WARNING`]; every one's days left go
/// to the metrics.
fn warn_expiring(tls: Option<&segnode_net::tls::ServerTls>, settings: &Settings) {
    use segnode_net::tls::remaining;
    let mut certs = settings.certificates();
    if let Some(t) = tls {
        // the listener's certificate as loaded (a reload may have changed the file since)
        certs.retain(|(what, _)| what != "dicom.tls.cert");
        certs.insert(0, ("dicom.tls.cert".into(), t.not_after()));
    }
    for (what, not_after) in certs {
        let Some(not_after) = not_after else { continue };
        crate::metrics::metrics().certificate_expiry(&what, crate::config::days_left(not_after));
        let left = remaining(not_after);
        if left < EXPIRY_WARNING {
            tracing::warn!(
                certificate = %what,
                days_left = left.as_secs() / 86_400,
                "TLS certificate expires within 30 days{}",
                if left.is_zero() { " (already expired)" } else { "" }
            );
        }
    }
}

/// Read the TLS listener's certificate and key (and client CA) again on each SIGHUP (new connections use
/// them; a failed reload keeps the previous ones), and warn about expiring certificates at start, after
/// a reload and daily.
async fn watch_certificates(
    tls: Option<Arc<segnode_net::tls::ServerTls>>,
    settings: Arc<Settings>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match &tls {
        Some(_) => signal(SignalKind::hangup()).ok(),
        None => None,
    };
    let mut daily = tokio::time::interval(std::time::Duration::from_secs(86_400));
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = daily.tick() => warn_expiring(tls.as_deref(), &settings),
            Some(()) = hangup => {
                let Some(tls) = &tls else { continue };
                match tls.reload() {
                    Ok(()) => {
                        info!(cert = %tls.files().cert.display(), "SIGHUP: TLS certificates reloaded");
                        crate::audit::record("tls_reloaded", serde_json::json!({ "ok": true }));
                        warn_expiring(Some(tls), &settings);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS certificates not reloaded; the previous ones stay in use");
                        crate::audit::record(
                            "tls_reloaded",
                            serde_json::json!({ "ok": false, "error": e.to_string() }),
                        );
                    }
                }
            }
        }
    }
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
