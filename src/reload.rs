//! Reload without restart: what SIGHUP (and `segnode reload`, and the console's action) changes in a
//! running node.
//!
//! The configuration is read again from the same layers as at start (the file given with `--config` or
//! found in the working directory, then the environment). If it does not load or validate, the error —
//! naming the key — is logged and audited and the running configuration stays. If it does, the parts a
//! node can take over while running replace the running ones and are published on a watch channel:
//! routing rules (the router is compiled again), destinations and their result forms (the dispatcher is
//! restarted between batches; a send in flight finishes), calling AE titles and `dicom.accept_any`
//! (checked for every new association; associations in progress are untouched), and `[results]`. Keys
//! that need a restart (listeners, database, storage, workers, HTTP) keep their running values; those that
//! differ are named in the log. Certificates are reloaded by the TLS watcher on the same signal.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{ConfigError, Settings};

/// The running configuration and where it was read from.
pub struct Live {
    config_file: Option<PathBuf>,
    tx: watch::Sender<Arc<Settings>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// Sections taken over.
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but need a restart.
    pub need_restart: Vec<&'static str>,
}

impl Live {
    pub fn new(settings: Arc<Settings>, config_file: Option<PathBuf>) -> Live {
        let (tx, _) = watch::channel(settings);
        Live { config_file, tx }
    }

    /// The running configuration.
    pub fn current(&self) -> Arc<Settings> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every configuration taken over.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Settings>> {
        self.tx.subscribe()
    }

    /// Read the configuration again and take over what can change while running.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        // `Settings::load` validates; the ONNX manifests are fitted to their models here, as at start
        let outcome = Settings::load(self.config_file.as_deref()).and_then(|new| {
            new.check_models()?;
            Ok(new)
        });
        let new = match outcome {
            Ok(n) => n,
            Err(e) => {
                error!(error = %e, "reload: configuration not taken over; the running one stays");
                crate::audit::record(
                    "config_reloaded",
                    serde_json::json!({ "ok": false, "error": e.to_string() }),
                );
                return Err(e);
            }
        };
        let old = self.current();
        let (merged, done) = take_over(&old, new);
        self.tx.send_replace(Arc::new(merged));
        info!(applied = ?done.applied, "configuration reloaded");
        if !done.need_restart.is_empty() {
            warn!(keys = ?done.need_restart, "reload: these changes take effect at the next restart");
        }
        crate::audit::record(
            "config_reloaded",
            serde_json::json!({ "ok": true, "applied": done.applied, "need_restart": done.need_restart }),
        );
        Ok(done)
    }
}

/// The running settings with the reloadable parts of `new`.
pub fn take_over(old: &Settings, new: Settings) -> (Settings, Reloaded) {
    let mut need_restart = Vec::new();
    let d = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if old.dicom.ae_title != new.dicom.ae_title
        || old.dicom.bind != new.dicom.bind
        || old.dicom.port != new.dicom.port
        || d(&old.dicom.tls, &new.dicom.tls)
    {
        need_restart.push("dicom (listener)");
    }
    if d(&old.database, &new.database) {
        need_restart.push("database");
    }
    if d(&old.storage, &new.storage) {
        need_restart.push("storage");
    }
    if d(&old.workers, &new.workers) {
        need_restart.push("workers");
    }
    if d(&old.http, &new.http) {
        need_restart.push("http");
    }
    if d(&old.pipelines, &new.pipelines) {
        need_restart.push("pipelines");
    }
    let mut merged = old.clone();
    merged.rules = new.rules;
    merged.destinations = new.destinations;
    merged.dicom.callers = new.dicom.callers;
    merged.dicom.accept_any = new.dicom.accept_any;
    merged.results = new.results;
    (
        merged,
        Reloaded {
            applied: vec![
                "rules",
                "destinations",
                "dicom.callers",
                "dicom.accept_any",
                "results",
            ],
            need_restart,
        },
    )
}

/// Reload on every SIGHUP until shutdown.
pub async fn on_sighup(live: Arc<Live>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("SIGHUP cannot be caught: reload only from the console");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(()) = hup.recv() => {
                info!("SIGHUP: reading the configuration again");
                let _ = live.reload();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_destinations_and_callers_are_taken_over_listeners_are_not() {
        let old = Settings::load_from_str_for_tests("[dicom]\nport = 11112\n");
        let new = Settings::load_from_str_for_tests(
            "[dicom]\nport = 11113\naccept_any = true\n[[rules]]\nname = \"r\"\npipelines = [\"noop\"]\n",
        );
        let (merged, done) = take_over(&old, new);
        assert_eq!(merged.dicom.port, 11112, "the listener keeps its port");
        assert!(merged.dicom.accept_any);
        assert_eq!(merged.rules.len(), 1);
        assert_eq!(done.need_restart, vec!["dicom (listener)"]);
    }
}
