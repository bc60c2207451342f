//! Typed settings: loading the layered configuration, showing where each value came from, validation.
//!
//! There is one source of defaults: the documented `config/segnode.toml`, compiled into the binary
//! ([`DEFAULTS_TOML`]), is the base layer. On it come the site's file (`--config FILE`, else
//! `config/segnode.toml` in the working directory when it exists), then the environment:
//! `SEGNODE_DICOM__PORT=11113` sets `dicom.port`. Tables merge key by key; a list (`workers.pipelines`,
//! `[[dicom.callers]]`, `[[rules]]`, `[[destinations]]`) is replaced as a whole by the layer that sets it.
//! [`Layers::effective`] is the merged configuration key by key with each key's origin
//! (`segnode config show`). A value that cannot be parsed or fails validation, or a key no setting
//! knows, stops the start with an error that names the key, because a node silently running with half
//! its settings is worse than one that refuses. Relative paths (storage, database, outbox) resolve
//! against the working directory.

use crate::pipeline::registry::Registry;
use crate::routing::{Router, RoutingError, RuleSettings};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors while loading or validating settings; each names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// All settings of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub node: NodeSettings,
    pub dicom: DicomSettings,
    pub http: HttpSettings,
    pub storage: StorageSettings,
    pub database: DatabaseSettings,
    pub completion: CompletionSettings,
    pub log: LogSettings,
    pub workers: WorkerSettings,
    pub dispatch: DispatchSettings,
    pub results: ResultSettings,
    #[serde(default)]
    pub pipelines: PipelineSettings,
    /// Routing rules, in order (see `crate::routing`).
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
    /// Where results are sent.
    #[serde(default)]
    pub destinations: Vec<DestinationSettings>,
    #[serde(default)]
    pub audit: AuditSettings,
}

/// The audit trail (`crate::audit`): an append-only JSON-lines file of security-relevant events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The file (empty: no audit trail).
    #[serde(default)]
    pub path: PathBuf,
    /// A syslog collector for DICOM audit messages (PS3.15 A.5), `udp://host:port` (empty: none).
    #[serde(default)]
    pub syslog: String,
}

/// Who this process is among the receivers and workers sharing one database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// A name that stays the same across restarts (empty: `<hostname>:<dicom port>`). A restarted
    /// receiver closes the associations its previous run left open under this name.
    #[serde(default)]
    pub name: String,
}

/// The web console, API and monitoring endpoint (`/`, `/api`, `/health`, `/metrics`); off while `port`
/// is 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: String,
    pub port: u16,
    /// The admin token (generated at first start on loopback); actions need it.
    pub admin_token_file: PathBuf,
    /// Host header values accepted besides the bound address and localhost.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// In-process workers: which pipelines run, how many at once, leases and retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Run pipelines in this process (`segnode serve`); false for a receiver-only node.
    pub enabled: bool,
    /// Jobs of one pipeline running at once in this process; pipelines not listed get 1.
    #[serde(default)]
    pub concurrency: std::collections::HashMap<String, usize>,
    /// The pipelines this process runs (empty: every pipeline the rules name). A GPU machine's
    /// `segnode worker` can take only its model's jobs, CPU machines the others.
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// A claimed job is taken again by another worker when its lease is not renewed for this long.
    pub lease_s: f64,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: i64,
    /// First retry delay; doubles per attempt (with jitter), capped at `retry_max_s`.
    pub retry_base_s: f64,
    pub retry_max_s: f64,
    /// How often idle workers look for jobs created by other processes, in milliseconds.
    pub poll_ms: u64,
    /// Memory for slices decoded while their series still arrives (MiB; 0: off). Only `serve` with
    /// in-process workers reads ahead, and only series a rule sends to one of its pipelines.
    pub read_ahead_mb: u64,
}

/// Delivery of results (C-STORE SCU).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    pub max_attempts: i64,
    pub retry_base_s: f64,
    pub retry_max_s: f64,
    pub connect_timeout_s: f64,
    pub dimse_timeout_s: f64,
    pub poll_ms: u64,
    /// Where results wait for delivery (durable, like incoming data).
    pub outbox_dir: PathBuf,
    /// Hours a result file stays in the outbox after every destination acknowledged it (0: forever).
    pub keep_sent_h: f64,
}

/// How result objects are labelled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultSettings {
    /// The SEG's series number.
    pub series_number: i32,
    /// The SEG's series description; `{pipeline}` is replaced by the pipeline name.
    pub series_description: String,
    /// Text burned into the overlay images' legend (empty: none).
    pub note: String,
    /// The overlay series (secondary captures).
    pub sc: FormSeriesSettings,
    /// The RT Structure Set.
    pub rtstruct: FormSeriesSettings,
    /// The TID 1500 measurement report.
    pub sr: FormSeriesSettings,
}

/// Series number and description of one result form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormSeriesSettings {
    pub series_number: i32,
    /// `{pipeline}` is replaced by the pipeline name.
    pub series_description: String,
}

impl ResultSettings {
    /// Series number and description (with `{pipeline}` filled in) of result form `form`.
    pub fn series_of(&self, form: &str, pipeline: &str) -> (i32, String) {
        let (n, d) = match form {
            "sc" => (self.sc.series_number, &self.sc.series_description),
            "rtstruct" => (
                self.rtstruct.series_number,
                &self.rtstruct.series_description,
            ),
            "sr" => (self.sr.series_number, &self.sr.series_description),
            _ => (self.series_number, &self.series_description),
        };
        (n, d.replace("{pipeline}", pipeline))
    }
}

/// Pipelines defined in the configuration (built-in ones need none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// `external:<name>` pipelines: a site's own model run as a command.
    #[serde(default)]
    pub external: std::collections::HashMap<String, crate::pipeline::external::ExternalSettings>,
    /// `onnx:<name>` pipelines: a site's own ONNX model run in-process (its manifest, time and memory).
    #[serde(default)]
    pub onnx: std::collections::HashMap<String, crate::pipeline::onnx::OnnxSettings>,
}

impl PipelineSettings {
    /// The registry of every pipeline name these settings can run.
    pub fn registry(&self) -> Registry<'_> {
        Registry::new(&self.external, &self.onnx)
    }
}

/// A DICOM destination for results.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSettings {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Our calling AE title towards this destination (default: `dicom.ae_title`).
    #[serde(default)]
    pub calling_ae: Option<String>,
    /// DICOM TLS towards it: the server's certificate must chain to `ca` and carry `server_name`
    /// (default: `host`); `cert` + `key` present ours when the destination asks for one.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// The result forms this destination receives (`seg`, `sc`, `rtstruct`, `sr`).
    #[serde(default = "default_results")]
    pub results: Vec<String>,
}

fn default_results() -> Vec<String> {
    vec!["seg".to_string()]
}

/// The DICOM listener: identity, access control, limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomSettings {
    pub ae_title: String,
    pub bind: String,
    pub port: u16,
    pub accept_any: bool,
    pub max_pdu: u32,
    pub max_associations: usize,
    pub artim_timeout_s: f64,
    pub idle_timeout_s: f64,
    pub dimse_timeout_s: f64,
    /// Seconds a new connection has for its TLS handshake and its A-ASSOCIATE-RQ.
    pub handshake_timeout_s: f64,
    /// Connections still in their handshake (not counted as associations), in total and per peer IP.
    pub max_pending: usize,
    pub max_pending_per_peer: usize,
    #[serde(default)]
    pub callers: Vec<CallerSettings>,
    #[serde(default)]
    pub tls: DicomTlsSettings,
}

/// The DICOM TLS listener beside the plain one (off while `port` is 0).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomTlsSettings {
    #[serde(default)]
    pub port: u16,
    /// Our certificate chain and private key (PEM).
    #[serde(default)]
    pub cert: PathBuf,
    #[serde(default)]
    pub key: PathBuf,
    /// CA certificates (PEM) that callers' certificates must chain to (empty: no client certificate
    /// asked for).
    #[serde(default)]
    pub client_ca: PathBuf,
}

impl DicomTlsSettings {
    /// The listener's TLS files, when the TLS listener is on.
    pub fn files(&self) -> Option<segnode_net::tls::ServerTlsFiles> {
        (self.port != 0).then(|| segnode_net::tls::ServerTlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: (!self.client_ca.as_os_str().is_empty()).then(|| self.client_ca.clone()),
        })
    }
}

/// One allowed calling AE title, optionally bound to a peer address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    pub ae_title: String,
    #[serde(default)]
    pub host: Option<String>,
    /// Admit this caller only over the TLS listener.
    #[serde(default)]
    pub require_tls: bool,
    /// Concurrent associations this calling AE title may hold (below `dicom.max_associations`).
    #[serde(default)]
    pub max_associations: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub dir: PathBuf,
    /// Refuse new instances (Out of Resources) when less free space than this remains, in MB.
    pub min_free_mb: u64,
    /// Hours after completion before a finished series' files are removed (0: keep forever).
    pub keep_hours: f64,
    /// Disk use (percent of the store's file system) above which finished series are removed oldest
    /// first whatever their age, down to `purge_below_percent` (0: off).
    pub purge_above_percent: f64,
    pub purge_below_percent: f64,
    /// Seconds between two retention passes.
    pub purge_interval_s: f64,
    /// File instances through the ingest journal (one shared flush before the success; files and
    /// index rows right after, in batches) instead of file + index before the success.
    pub journal: bool,
    /// MB per journal segment; instances up to a quarter of it go through the journal.
    pub journal_segment_mb: u64,
    /// Segments in the journal's ring (1–64).
    pub journal_segments: u32,
}

impl StorageSettings {
    /// The journal's geometry.
    pub fn journal_params(&self) -> crate::store::journal::JournalParams {
        crate::store::journal::JournalParams {
            segment_bytes: self.journal_segment_mb << 20,
            segments: self.journal_segments,
            full_wait: std::time::Duration::from_secs(30),
        }
    }

    /// Largest instance received in memory for the journal (a quarter of a segment: a record must fit
    /// one, and a few of them per segment keep the padding small).
    pub fn journal_max_bytes(&self) -> usize {
        ((self.journal_segment_mb << 20) / 4) as usize
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    /// PostgreSQL connections per process (SQLite always uses one).
    pub max_connections: u32,
    /// How long an index operation waits for a connection; past it (a database that is down or
    /// overloaded) the C-STORE gets Out of Resources rather than hanging the sender.
    pub acquire_timeout_s: f64,
}

/// Evidence thresholds of the series completion tracker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionSettings {
    pub settle_s: f64,
    pub quiet_period_s: f64,
    pub spacing_tolerance: f64,
    pub poll_ms: u64,
    /// Complete at the release itself, without `settle_s`, when the evidence is whole: every carrier
    /// ended, one released, the stack contiguous, and no other association from the same calling AE or
    /// host open. Callers in `settle_callers`, and callers learnt to split series, still get the wait.
    pub fast_release: bool,
    /// Calling AE titles that split a series over several associations: they always get `settle_s`.
    #[serde(default)]
    pub settle_callers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

/// The `SEGNODE_<SECTION>__<KEY>` variables of an environment. Other `SEGNODE_…` names (a container
/// platform's service variables such as `SEGNODE_PORT=tcp://…`, a test harness's switches) are not
/// settings and are left out rather than refused as unknown keys.
fn settings_environment(
    vars: impl Iterator<Item = (String, String)>,
) -> std::collections::HashMap<String, String> {
    vars.filter(|(k, _)| {
        k.strip_prefix("SEGNODE_")
            .is_some_and(|rest| rest.contains("__") && !rest.starts_with('_'))
    })
    .collect()
}

impl Settings {
    /// This process's node name: `node.name`, else `<hostname>:<dicom port>`.
    pub fn node_name(&self) -> String {
        if !self.node.name.trim().is_empty() {
            return self.node.name.trim().to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", self.dicom.port)
    }
}

/// The documented configuration file, compiled into the binary. It is the base layer of every load, so
/// the defaults and their documentation are one text and cannot drift apart.
pub const DEFAULTS_TOML: &str = include_str!("../config/segnode.toml");

/// How the built-in layer is named where origins are shown.
pub const DEFAULTS_NAME: &str = "config/segnode.toml (built in)";

/// The site file read without `--config` when it exists in the working directory.
pub const WORKDIR_FILE: &str = "config/segnode.toml";

/// The environment layer as the `config` crate reports it in a value's origin.
const ENV_ORIGIN: &str = "the environment";

/// Where a value of the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in layer (the documented `config/segnode.toml`).
    Default,
    /// The site's file.
    File(PathBuf),
    /// An environment variable, by name.
    Environment(String),
}

impl Origin {
    /// `default`, `file` or `environment`.
    pub fn source(&self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File(_) => "file",
            Origin::Environment(_) => "environment",
        }
    }

    /// The built-in file's name, the site file's path or the variable's name.
    pub fn detail(&self) -> String {
        match self {
            Origin::Default => DEFAULTS_NAME.to_string(),
            Origin::File(p) => p.display().to_string(),
            Origin::Environment(v) => v.clone(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // the header of `config show` names the built-in layer once
            Origin::Default => f.write_str("default"),
            _ => write!(f, "{} {}", self.source(), self.detail()),
        }
    }
}

/// One key of the effective configuration: its value and where it came from. A list (of values or of
/// tables such as `[[dicom.callers]]`) is one key: it comes whole from one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: serde_json::Value,
    pub origin: Origin,
}

/// The effective configuration, key by key (dotted keys, sorted), with the layers that made it.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The site's file, when one was read.
    pub file: Option<PathBuf>,
    /// The `SEGNODE_<SECTION>__<KEY>` variables that were applied, sorted.
    pub environment: Vec<String>,
    pub entries: std::collections::BTreeMap<String, Entry>,
}

/// The layers of a configuration, lowest first: the built-in defaults ([`DEFAULTS_TOML`]), the site's
/// file, the environment. A later layer overrides a key of an earlier one; tables merge key by key, but a
/// list — an array such as `workers.pipelines` or an array of tables such as `[[dicom.callers]]`,
/// `[[rules]]`, `[[destinations]]` — is replaced as a whole (that is how the `config` crate sets arrays,
/// and it is what a site needs: a file that lists its own callers does not silently keep the defaults).
#[derive(Debug, Clone)]
pub struct Layers {
    file: Option<PathBuf>,
    env: std::collections::HashMap<String, String>,
}

impl Layers {
    /// `file` (`--config`, which must exist), else [`WORKDIR_FILE`] when it exists in the working
    /// directory, else no file; and the `SEGNODE_…` variables of this process.
    pub fn discover(file: Option<&Path>) -> Result<Layers, ConfigError> {
        let file = match file {
            Some(path) if !path.is_file() => {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(WORKDIR_FILE)).filter(|p| p.is_file()),
        };
        Ok(Layers::new(file, std::env::vars()))
    }

    /// Explicit layers: a site file (or none) and an environment (only its settings variables count).
    pub fn new(file: Option<PathBuf>, env: impl IntoIterator<Item = (String, String)>) -> Layers {
        Layers {
            file: file.map(|p| std::path::absolute(&p).unwrap_or(p)),
            env: settings_environment(env.into_iter()),
        }
    }

    /// The site's file of these layers (absolute), if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn build(&self) -> Result<config::Config, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULTS_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = &self.file {
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("SEGNODE")
                // set explicitly: with `__` as separator the prefix separator would change too
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                // SEGNODE_WORKERS__PIPELINES=lung,cochlear
                .list_separator(",")
                .with_list_parse_key("workers.pipelines")
                .with_list_parse_key("http.allowed_hosts")
                .with_list_parse_key("completion.settle_callers")
                .source(Some(self.env.clone())),
        );
        Ok(builder.build()?)
    }

    /// The typed, validated settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let settings: Settings = self.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every key of the merged layers with its origin (not deserialised or validated: an administrator
    /// can look at a configuration that does not start).
    pub fn effective(&self) -> Result<Effective, ConfigError> {
        let merged = self.build()?;
        let mut leaves = Vec::new();
        flatten("", &merged.cache, &mut leaves);
        let mut entries = std::collections::BTreeMap::new();
        for (key, value) in leaves {
            let origin = match value.origin() {
                None => Origin::Default,
                Some(ENV_ORIGIN) => Origin::Environment(self.variable_of(&key)),
                Some(_) => self
                    .file
                    .clone()
                    .map(Origin::File)
                    .unwrap_or(Origin::Default),
            };
            let value: serde_json::Value = value.clone().try_deserialize()?;
            entries.insert(key, Entry { value, origin });
        }
        let mut environment: Vec<String> = self.env.keys().cloned().collect();
        environment.sort();
        Ok(Effective {
            file: self.file.clone(),
            environment,
            entries,
        })
    }

    /// The variable that set `key` (`dicom.port` ← `SEGNODE_DICOM__PORT`).
    fn variable_of(&self, key: &str) -> String {
        self.env
            .keys()
            .find(|v| env_key(v).as_deref() == Some(key))
            .cloned()
            .unwrap_or_else(|| format!("SEGNODE_{}", key.to_uppercase().replace('.', "__")))
    }
}

/// The dotted key a settings variable sets (`SEGNODE_DICOM__PORT` → `dicom.port`).
fn env_key(var: &str) -> Option<String> {
    var.strip_prefix("SEGNODE_")
        .map(|rest| rest.to_lowercase().replace("__", "."))
}

/// The leaves of a merged configuration: tables are walked, anything else (lists included) is a leaf.
fn flatten<'a>(prefix: &str, value: &'a config::Value, out: &mut Vec<(String, &'a config::Value)>) {
    match &value.kind {
        config::ValueKind::Table(table) if !table.is_empty() => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => out.push((prefix.to_string(), value)),
    }
}

impl Effective {
    /// `{"file", "environment", "settings": {"dicom.port": {"value", "source", "origin"}, …}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let settings: serde_json::Map<String, serde_json::Value> = self
            .entries
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    serde_json::json!({
                        "value": e.value,
                        "source": e.origin.source(),
                        "origin": e.origin.detail(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "defaults": DEFAULTS_NAME,
            "file": self.file.as_ref().map(|p| p.display().to_string()),
            "environment": self.environment,
            "settings": settings,
        })
    }
}

/// TOML-like text: `key = value  # origin`, a list of tables one element per line.
impl std::fmt::Display for Effective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "# effective segnode configuration; layers, later ones win:"
        )?;
        writeln!(f, "#   default      {DEFAULTS_NAME}")?;
        match &self.file {
            Some(p) => writeln!(f, "#   file         {}", p.display())?,
            None => writeln!(f, "#   file         (none)")?,
        }
        if self.environment.is_empty() {
            writeln!(f, "#   environment  (no SEGNODE_<SECTION>__<KEY> variable)")?;
        } else {
            writeln!(f, "#   environment  {}", self.environment.join(" "))?;
        }
        writeln!(
            f,
            "# A list ([[dicom.callers]], [[rules]], [[destinations]], arrays) comes whole from one layer."
        )?;
        for (key, e) in &self.entries {
            match e.value.as_array() {
                Some(items) if items.iter().any(|v| v.is_object()) => {
                    writeln!(f, "{key} = [  # {}", e.origin)?;
                    for item in items {
                        writeln!(f, "    {},", inline(item))?;
                    }
                    writeln!(f, "]")?;
                }
                _ => {
                    let line = format!("{key} = {}", inline(&e.value));
                    writeln!(f, "{line:<48}  # {}", e.origin)?;
                }
            }
        }
        Ok(())
    }
}

/// A value as TOML inline text.
fn inline(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(inline).collect::<Vec<_>>().join(", ")
            )
        }
        serde_json::Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// What to add to the configuration to let a refused caller in; logged where the association is
/// rejected.
pub fn caller_hint(calling_ae: &str, peer: IpAddr) -> String {
    format!(
        "to let it in, add to the configuration file: [[dicom.callers]] ae_title = {:?} host = \"{}\" \
         (one key per line; a file's [[dicom.callers]] list replaces the default list, so repeat the \
         callers to keep; `segnode config show` lists the effective callers)",
        calling_ae.trim(),
        peer.to_canonical()
    )
}

impl Settings {
    /// Load the layers — the built-in defaults, then `file` (when given; `config/segnode.toml` is used
    /// when it exists and no file is named), then the `SEGNODE_…` environment — and validate the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Layers::discover(file)?.settings()
    }

    /// Defaults plus a TOML snippet, not validated (unit tests of modules that take settings).
    #[doc(hidden)]
    pub fn load_from_str_for_tests(toml: &str) -> Settings {
        config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULTS_TOML,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("test settings")
    }

    /// Check every value that deserialised but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.dicom;
        validate_ae_title("dicom.ae_title", &d.ae_title)?;
        d.bind
            .parse::<IpAddr>()
            .map_err(|_| invalid("dicom.bind", format!("`{}` is not an IP address", d.bind)))?;
        if d.port == 0 && d.tls.port == 0 {
            return Err(invalid(
                "dicom.port",
                "0 (plain listener off) needs dicom.tls.port",
            ));
        }
        if d.tls.port != 0 && d.tls.port == d.port {
            return Err(invalid("dicom.tls.port", "must differ from dicom.port"));
        }
        if let Some(files) = d.tls.files() {
            if files.cert.as_os_str().is_empty() || files.key.as_os_str().is_empty() {
                return Err(invalid(
                    "dicom.tls.cert",
                    "the TLS listener needs dicom.tls.cert and dicom.tls.key",
                ));
            }
            segnode_net::tls::server_config(&files)
                .map_err(|e| invalid("dicom.tls", e.to_string()))?;
        }
        positive_secs("dicom.handshake_timeout_s", d.handshake_timeout_s)?;
        if d.max_pending == 0 || d.max_pending_per_peer == 0 {
            return Err(invalid(
                "dicom.max_pending",
                "max_pending and max_pending_per_peer must be at least 1",
            ));
        }
        if !(4096..=16_777_216).contains(&d.max_pdu) {
            return Err(invalid("dicom.max_pdu", "must be 4096…16777216 bytes"));
        }
        if d.max_associations == 0 {
            return Err(invalid("dicom.max_associations", "must be at least 1"));
        }
        positive_secs("dicom.artim_timeout_s", d.artim_timeout_s)?;
        positive_secs("dicom.idle_timeout_s", d.idle_timeout_s)?;
        positive_secs("dicom.dimse_timeout_s", d.dimse_timeout_s)?;
        for c in &d.callers {
            validate_ae_title("dicom.callers.ae_title", &c.ae_title)?;
            if c.max_associations == Some(0) {
                return Err(invalid(
                    "dicom.callers.max_associations",
                    format!("caller {}: must be at least 1", c.ae_title),
                ));
            }
            if let Some(h) = &c.host {
                h.parse::<IpAddr>().map_err(|_| {
                    invalid(
                        "dicom.callers.host",
                        format!("`{h}` (caller {}) is not an IP address", c.ae_title),
                    )
                })?;
            }
        }
        self.http.bind.parse::<IpAddr>().map_err(|_| {
            invalid(
                "http.bind",
                format!("`{}` is not an IP address", self.http.bind),
            )
        })?;
        if self.http.admin_token_file.as_os_str().is_empty() {
            return Err(invalid("http.admin_token_file", "must not be empty"));
        }
        if self.storage.dir.as_os_str().is_empty() {
            return Err(invalid("storage.dir", "must not be empty"));
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "database.url",
                format!("`{url}`: expected sqlite://PATH or postgres://…"),
            ));
        }
        let st = &self.storage;
        if !(st.keep_hours.is_finite() && st.keep_hours >= 0.0) {
            return Err(invalid(
                "storage.keep_hours",
                "must be 0 (keep forever) or more",
            ));
        }
        if !(0.0..=100.0).contains(&st.purge_above_percent)
            || !(0.0..=100.0).contains(&st.purge_below_percent)
            || (st.purge_above_percent > 0.0 && st.purge_below_percent >= st.purge_above_percent)
        {
            return Err(invalid(
                "storage.purge_below_percent",
                "percentages 0–100 with purge_below_percent < purge_above_percent",
            ));
        }
        positive_secs("storage.purge_interval_s", st.purge_interval_s)?;
        if !(1..=4096).contains(&st.journal_segment_mb) {
            return Err(invalid("storage.journal_segment_mb", "must be 1 to 4096"));
        }
        if !(1..=64).contains(&st.journal_segments) {
            return Err(invalid("storage.journal_segments", "must be 1 to 64"));
        }
        if !(self.dispatch.keep_sent_h.is_finite() && self.dispatch.keep_sent_h >= 0.0) {
            return Err(invalid(
                "dispatch.keep_sent_h",
                "must be ≥ 0 (0 keeps results forever)",
            ));
        }
        let registry = self.pipelines.registry();
        for p in &self.workers.pipelines {
            registry
                .parse(p)
                .map_err(|e| invalid("workers.pipelines", e.to_string()))?;
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        positive_secs(
            "database.acquire_timeout_s",
            self.database.acquire_timeout_s,
        )?;
        let c = &self.completion;
        if !(c.settle_s.is_finite() && c.settle_s >= 0.0) {
            return Err(invalid("completion.settle_s", "must be ≥ 0"));
        }
        positive_secs("completion.quiet_period_s", c.quiet_period_s)?;
        if !(c.spacing_tolerance > 0.0 && c.spacing_tolerance < 0.5) {
            return Err(invalid(
                "completion.spacing_tolerance",
                "must be in (0, 0.5)",
            ));
        }
        if !(10..=10_000).contains(&c.poll_ms) {
            return Err(invalid("completion.poll_ms", "must be 10…10000"));
        }
        if let Some(bad) = c
            .settle_callers
            .iter()
            .find(|ae| ae.trim().is_empty() || ae.trim().len() > 16)
        {
            return Err(invalid(
                "completion.settle_callers",
                format!("{bad:?} is not an AE title (1…16 characters)"),
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        let w = &self.workers;
        positive_secs("workers.lease_s", w.lease_s)?;
        positive_secs("workers.retry_base_s", w.retry_base_s)?;
        positive_secs("workers.retry_max_s", w.retry_max_s)?;
        if w.max_attempts < 1 {
            return Err(invalid("workers.max_attempts", "must be at least 1"));
        }
        if w.concurrency.values().any(|c| *c == 0 || *c > 64) {
            return Err(invalid("workers.concurrency", "each value must be 1…64"));
        }
        let d = &self.dispatch;
        positive_secs("dispatch.retry_base_s", d.retry_base_s)?;
        positive_secs("dispatch.retry_max_s", d.retry_max_s)?;
        positive_secs("dispatch.connect_timeout_s", d.connect_timeout_s)?;
        positive_secs("dispatch.dimse_timeout_s", d.dimse_timeout_s)?;
        if d.max_attempts < 1 {
            return Err(invalid("dispatch.max_attempts", "must be at least 1"));
        }
        for (name, e) in &self.pipelines.external {
            if e.command.is_empty() || e.command[0].trim().is_empty() {
                return Err(invalid(
                    "pipelines.external.command",
                    format!("external:{name} has no command"),
                ));
            }
            positive_secs("pipelines.external.timeout_s", e.timeout_s)?;
        }
        for o in self.pipelines.onnx.values() {
            positive_secs("pipelines.onnx.timeout_s", o.timeout_s)?;
            if o.max_memory_mb == 0 {
                return Err(invalid(
                    "pipelines.onnx.max_memory_mb",
                    "must be at least 1",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for dest in &self.destinations {
            if !names.insert(dest.name.as_str()) {
                return Err(invalid(
                    "destinations.name",
                    format!("`{}` is defined twice", dest.name),
                ));
            }
            validate_ae_title("destinations.ae_title", &dest.ae_title)?;
            if let Some(c) = &dest.calling_ae {
                validate_ae_title("destinations.calling_ae", c)?;
            }
            if dest.results.is_empty() {
                return Err(invalid(
                    "destinations.results",
                    format!("`{}` receives no result form", dest.name),
                ));
            }
            if let Some(bad) = dest
                .results
                .iter()
                .find(|f| !segnode_imaging::result::FORMS.contains(&f.as_str()))
            {
                return Err(invalid(
                    "destinations.results",
                    format!(
                        "`{}`: unknown result form `{bad}` (known: {})",
                        dest.name,
                        segnode_imaging::result::FORMS.join(", ")
                    ),
                ));
            }
            if dest.port == 0 || dest.host.trim().is_empty() {
                return Err(invalid(
                    "destinations.port",
                    format!("`{}` needs a host and a port", dest.name),
                ));
            }
            if let Some(files) = dest.tls_files() {
                let files = files.map_err(|e| invalid("destinations.tls", e))?;
                segnode_net::tls::client_config(&files)
                    .map_err(|e| invalid("destinations.tls", format!("`{}`: {e}", dest.name)))?;
                segnode_net::tls::server_name(dest.server_name.as_deref().unwrap_or(&dest.host))
                    .map_err(|e| {
                        invalid("destinations.server_name", format!("`{}`: {e}", dest.name))
                    })?;
            } else if dest.ca.is_some() || dest.cert.is_some() || dest.key.is_some() {
                return Err(invalid(
                    "destinations.tls",
                    format!("`{}` has TLS files but tls = false", dest.name),
                ));
            }
        }
        self.router().map_err(|e| ConfigError::Invalid {
            key: "rules",
            problem: e.to_string(),
        })?;
        Ok(())
    }
}

impl DestinationSettings {
    /// The TLS files of this destination when `tls = true` (`Err`: `ca` missing).
    pub fn tls_files(&self) -> Option<Result<segnode_net::tls::ClientTlsFiles, String>> {
        self.tls.then(|| {
            Ok(segnode_net::tls::ClientTlsFiles {
                ca: self
                    .ca
                    .clone()
                    .ok_or_else(|| format!("`{}`: tls = true needs `ca`", self.name))?,
                cert: self.cert.clone(),
                key: self.key.clone(),
            })
        })
    }

    /// The SCU's TLS settings for this destination (None: plain TCP).
    pub fn scu_tls(&self) -> Result<Option<segnode_net::scu::ClientTls>, String> {
        match self.tls_files() {
            None => Ok(None),
            Some(files) => {
                let config = segnode_net::tls::client_config(&files?).map_err(|e| e.to_string())?;
                Ok(Some(segnode_net::scu::ClientTls {
                    config,
                    server_name: self.server_name.clone(),
                }))
            }
        }
    }
}

impl Settings {
    /// The TLS certificates this configuration uses (the listener's, the destinations' client
    /// certificates) and when each expires, when the file can be read.
    pub fn certificates(&self) -> Vec<(String, Option<std::time::SystemTime>)> {
        use segnode_net::tls::leaf_not_after;
        let mut certs = Vec::new();
        if self.dicom.tls.port != 0 && !self.dicom.tls.cert.as_os_str().is_empty() {
            certs.push((
                "dicom.tls.cert".to_string(),
                leaf_not_after(&self.dicom.tls.cert),
            ));
        }
        for d in self.destinations.iter().filter(|d| d.tls) {
            if let Some(c) = &d.cert {
                certs.push((format!("destination {} cert", d.name), leaf_not_after(c)));
            }
        }
        certs
    }

    /// Every `[pipelines.onnx]` manifest read and fitted to its model, the models loaded (and kept warm
    /// for the jobs): a manifest that does not fit refuses `serve`, `worker` and a reload, naming the
    /// problem. Not part of [`Settings::validate`], which every command runs: `segnode status` (a health
    /// check) or `series list` must not load models.
    pub fn check_models(&self) -> Result<(), ConfigError> {
        for (name, o) in &self.pipelines.onnx {
            o.check()
                .map_err(|e| invalid("pipelines.onnx", format!("onnx:{name}: {e}")))?;
        }
        Ok(())
    }

    /// The routing rules compiled and checked against this configuration's pipelines and destinations.
    pub fn router(&self) -> Result<Router, RoutingError> {
        let destinations: Vec<&str> = self.destinations.iter().map(|d| d.name.as_str()).collect();
        Router::compile(&self.rules, &self.pipelines.registry(), &destinations)
    }
}

/// Days from now to `not_after` (negative once it has passed).
pub fn days_left(not_after: std::time::SystemTime) -> f64 {
    match not_after.duration_since(std::time::SystemTime::now()) {
        Ok(d) => d.as_secs_f64() / 86_400.0,
        Err(e) => -e.duration().as_secs_f64() / 86_400.0,
    }
}

fn positive_secs(key: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 && v < 1e7 {
        Ok(())
    } else {
        Err(invalid(
            key,
            "must be a positive number of seconds (none infinite)",
        ))
    }
}

/// An AE title: 1–16 characters of the default repertoire, no backslash or control characters, not all
/// spaces.
pub fn validate_ae_title(key: &'static str, ae: &str) -> Result<(), ConfigError> {
    let trimmed = ae.trim();
    if trimmed.is_empty() || ae.len() > 16 {
        return Err(invalid(key, format!("`{ae}` must be 1–16 characters")));
    }
    if ae
        .chars()
        .any(|c| c == '\\' || c.is_control() || !c.is_ascii())
    {
        return Err(invalid(
            key,
            format!("`{ae}` has a backslash, control or non-ASCII character"),
        ));
    }
    Ok(())
}

/// Seconds from the config as a Duration (validated finite and positive before).
impl DatabaseSettings {
    /// The index database's pool options.
    pub fn db_options(&self) -> segnode_db::DbOptions {
        segnode_db::DbOptions {
            url: self.url.clone(),
            max_connections: self.max_connections,
            acquire_timeout: secs(self.acquire_timeout_s),
        }
    }
}

pub fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Layers with a site file holding `toml` (kept alive by the returned directory).
    fn with_file(toml: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Layers) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("site.toml");
        std::fs::write(&path, toml).expect("write site file");
        let layers = Layers::new(Some(path), vars(env));
        (dir, layers)
    }

    fn callers(s: &Settings) -> Vec<(String, Option<String>)> {
        s.dicom
            .callers
            .iter()
            .map(|c| (c.ae_title.clone(), c.host.clone()))
            .collect()
    }

    #[test]
    fn defaults_validate() {
        let s = Layers::new(None, vars(&[])).settings().unwrap();
        assert_eq!(s.dicom.port, 11112);
        assert!(!s.dicom.accept_any);
        // the documented callers: the local DCMTK / pynetdicom / Orthanc titles
        let titles: Vec<String> = callers(&s).into_iter().map(|c| c.0).collect();
        assert_eq!(
            titles,
            ["STORESCU", "ECHOSCU", "DCMSEND", "PYNETDICOM", "ORTHANC"]
        );
        assert!(s
            .dicom
            .callers
            .iter()
            .all(|c| c.host.as_deref() == Some("127.0.0.1")));
    }

    #[test]
    fn without_file_every_key_is_default() {
        let e = Layers::new(None, vars(&[])).effective().unwrap();
        assert!(e.file.is_none());
        assert!(e.entries.values().all(|x| x.origin == Origin::Default));
        assert_eq!(e.entries["dicom.port"].value, serde_json::json!(11112));
        assert_eq!(
            e.entries["dicom.callers"].value[1],
            serde_json::json!({"ae_title": "ECHOSCU", "host": "127.0.0.1"})
        );
        assert_eq!(e.entries["storage.dir"].value, "data/store");
    }

    #[test]
    fn site_list_replaces_default_list() {
        let (_d, layers) = with_file(
            "[[dicom.callers]]\nae_title = \"MODALITY1\"\nhost = \"10.0.0.5\"\n",
            &[],
        );
        let s = layers.settings().unwrap();
        assert_eq!(
            callers(&s),
            vec![("MODALITY1".to_string(), Some("10.0.0.5".to_string()))]
        );
        let e = layers.effective().unwrap();
        let path = layers.file().unwrap().to_path_buf();
        assert_eq!(e.entries["dicom.callers"].origin, Origin::File(path));
        assert_eq!(
            e.entries["dicom.callers"].value.as_array().unwrap().len(),
            1
        );
        // the rest of [dicom] stays default: tables merge, lists replace
        assert_eq!(e.entries["dicom.port"].origin, Origin::Default);
        // an array of scalars, too
        let (_d, layers) = with_file("[workers]\npipelines = [\"lung\"]\n", &[]);
        assert_eq!(layers.settings().unwrap().workers.pipelines, ["lung"]);
        let (_d, layers) = with_file(
            "[[rules]]\nname = \"a\"\npipelines = [\"lung\"]\n",
            &[("SEGNODE_WORKERS__PIPELINES", "cochlear")],
        );
        let s = layers.settings().unwrap();
        assert_eq!(s.rules.len(), 1);
        assert_eq!(s.workers.pipelines, ["cochlear"]);
    }

    #[test]
    fn a_file_with_one_key_keeps_the_other_defaults() {
        let (_d, layers) = with_file("[dicom]\nport = 2000\n", &[]);
        let s = layers.settings().unwrap();
        assert_eq!(s.dicom.port, 2000);
        assert_eq!(s.dicom.callers.len(), 5);
        assert_eq!(s.storage.dir, PathBuf::from("data/store"));
    }

    #[test]
    fn env_overrides_file() {
        let (_d, layers) = with_file(
            "[dicom]\nport = 2000\nae_title = \"SITE\"\n",
            &[("SEGNODE_DICOM__PORT", "3000"), ("SEGNODE_PORT", "tcp://x")],
        );
        let s = layers.settings().unwrap();
        assert_eq!(s.dicom.port, 3000);
        assert_eq!(s.dicom.ae_title, "SITE");
        let e = layers.effective().unwrap();
        assert_eq!(
            e.entries["dicom.port"].origin,
            Origin::Environment("SEGNODE_DICOM__PORT".into())
        );
        assert_eq!(e.entries["dicom.port"].value, serde_json::json!(3000));
        assert_eq!(e.entries["dicom.ae_title"].origin.source(), "file");
        assert_eq!(e.entries["log.level"].origin, Origin::Default);
        assert_eq!(e.environment, ["SEGNODE_DICOM__PORT"]);
        let text = e.to_string();
        assert!(
            text.lines().any(|l| l.starts_with("dicom.port = 3000")
                && l.ends_with("# environment SEGNODE_DICOM__PORT")),
            "{text}"
        );
        let json = e.to_json();
        assert_eq!(json["settings"]["dicom.port"]["source"], "environment");
        assert_eq!(
            json["settings"]["dicom.port"]["origin"],
            "SEGNODE_DICOM__PORT"
        );
    }

    #[test]
    fn unknown_keys_still_rejected() {
        let (_d, layers) = with_file("[dicom]\nprot = 2000\n", &[]);
        let e = layers.settings().unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
        let (_d, layers) = with_file("[dicomm]\nport = 2000\n", &[]);
        assert!(layers.settings().is_err());
        let layers = Layers::new(None, vars(&[("SEGNODE_DICOM__BOGUS", "1")]));
        let e = layers.settings().unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        // the effective configuration can still be shown
        assert!(layers
            .effective()
            .unwrap()
            .entries
            .contains_key("dicom.bogus"));
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let e = Layers::discover(Some(Path::new("/nonexistent/segnode.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--config"), "{e}");
    }

    #[test]
    fn caller_hint_names_the_entry() {
        let h = caller_hint("MODALITY1 ", "::ffff:10.0.0.5".parse().unwrap());
        assert!(h.contains("[[dicom.callers]]"), "{h}");
        assert!(h.contains("ae_title = \"MODALITY1\""), "{h}");
        assert!(h.contains("host = \"10.0.0.5\""), "{h}");
    }

    #[test]
    fn only_section_key_variables_are_settings() {
        let vars = [
            ("SEGNODE_DICOM__PORT", "104"),
            ("SEGNODE_NODE__NAME", "rx-1"),
            // Kubernetes service variables of a service named segnode, a test switch, others
            ("SEGNODE_PORT", "tcp://10.0.0.1:11112"),
            ("SEGNODE_SERVICE_HOST", "10.0.0.1"),
            ("SEGNODE_TEST_DB", "postgres"),
            ("SEGNODE___X", "1"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let mut kept: Vec<String> = settings_environment(vars.into_iter()).into_keys().collect();
        kept.sort();
        assert_eq!(kept, vec!["SEGNODE_DICOM__PORT", "SEGNODE_NODE__NAME"]);
    }

    #[test]
    fn ae_title_rules() {
        assert!(validate_ae_title("k", "SEGNODE").is_ok());
        assert!(validate_ae_title("k", "").is_err());
        assert!(validate_ae_title("k", "   ").is_err());
        assert!(validate_ae_title("k", "A_TITLE_THAT_IS_TOO_LONG").is_err());
        assert!(validate_ae_title("k", "BAD\\AE").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut s = Layers::new(None, vars(&[])).settings().unwrap();
        s.dicom.max_pdu = 10;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("dicom.max_pdu"), "{e}");
    }
}
