//! The audit trail: an append-only JSON-lines file of security-relevant events, each line written and
//! fsync'd before the call returns, for a hospital's security office ("who sent what, what was sent
//! where, who changed what").
//!
//! One line per event: `{"ts": RFC 3339 UTC, "node": node.name, "event": kind, …fields}`. The kinds:
//! `config_loaded`, `association_accepted`, `association_rejected`, `association_ended` (instances
//! received and refused, bytes), `handshake_failed` (TLS), `results_sent` (destination, SOP instances,
//! statuses), `admin` (a CLI action that changes state: job retry, resend). The file is opened in
//! append mode, so several processes of one node (serve, a CLI command) can share it.
//!
//! With `audit.syslog` set, every event also goes to the site's collector as a DICOM audit message
//! ([`crate::atna`]: PS3.15 A.5 over RFC 5424 / UDP).
//!
//! Writing the trail must never stop the node: a failed write is logged as an error and the event is
//! lost (the process log still has it). Nothing is recorded before [`open`] (tests, `segnode segment`).

use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Why the audit trail could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log `{path}`: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

struct AuditLog {
    node: String,
    ae_title: String,
    file: Option<Mutex<std::fs::File>>,
    syslog: Option<crate::atna::SyslogSink>,
}

static LOG: OnceLock<AuditLog> = OnceLock::new();

/// Open (create) the trail at `path` for this process, and the syslog collector at `syslog`
/// (`udp://host:port`); an empty path / target leaves that one off. A second call keeps the first trail.
pub fn open(path: &Path, syslog: &str, node: &str, ae_title: &str) -> Result<(), AuditError> {
    if (path.as_os_str().is_empty() && syslog.is_empty()) || LOG.get().is_some() {
        return Ok(());
    }
    let file = if path.as_os_str().is_empty() {
        None
    } else {
        let err = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Some(Mutex::new(file))
    };
    let syslog = if syslog.is_empty() {
        None
    } else {
        Some(
            crate::atna::SyslogSink::connect(syslog).map_err(|source| AuditError {
                path: PathBuf::from(syslog),
                source,
            })?,
        )
    };
    let _ = LOG.set(AuditLog {
        node: node.to_string(),
        ae_title: ae_title.to_string(),
        file,
        syslog,
    });
    Ok(())
}

/// Record one event with `fields` (a JSON object); a no-op while the trail is off.
pub fn record(event: &str, fields: Value) {
    let Some(log) = LOG.get() else { return };
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let Some(sink) = &log.syslog {
        sink.send(event, &fields, &log.node, &log.ae_title, &ts);
    }
    let Some(file) = &log.file else { return };
    let mut line = Map::new();
    line.insert("ts".into(), Value::String(ts));
    line.insert("node".into(), Value::String(log.node.clone()));
    line.insert("event".into(), Value::String(event.to_string()));
    if let Value::Object(f) = fields {
        line.extend(f);
    }
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
    {
        tracing::error!(error = %e, event, "audit event not written");
    }
}
