//! Typed settings: loading from the TOML file and the `SEGNODE_…` environment, and validation.
//!
//! Every key has a built-in default (the same values `config/segnode.toml` documents), so the node starts
//! with no file at all. The environment overrides the file: `SEGNODE_DICOM__PORT=11113` sets
//! `dicom.port`. A value that cannot be parsed or fails validation stops the start with an error that
//! names the key, because a node silently running with half its settings is worse than one that refuses.

use crate::pipeline::registry::Registry;
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

/// The monitoring endpoint (`/health`, `/metrics`); off while `port` is 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: String,
    pub port: u16,
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
    pub series_number: i32,
    /// `{pipeline}` is replaced by the pipeline name.
    pub series_description: String,
}

/// Pipelines defined in the configuration (built-in ones need none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// `external:<name>` pipelines: a site's own model run as a command.
    #[serde(default)]
    pub external: std::collections::HashMap<String, crate::pipeline::external::ExternalSettings>,
}

/// One routing rule: a match on series attributes → pipelines and destinations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub name: String,
    pub pipelines: Vec<String>,
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchSettings,
}

/// Conditions of a rule; all given ones must hold (lists: any of; text compares case-insensitively).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSettings {
    pub modality: Option<Vec<String>>,
    pub body_part: Option<Vec<String>>,
    /// Regular expression searched in SeriesDescription.
    pub series_description: Option<String>,
    /// Regular expression searched in ProtocolName.
    pub protocol_name: Option<String>,
    /// [min, max] SliceThickness in mm.
    pub slice_thickness: Option<[f64; 2]>,
    /// ImageOrientationPatient rounded to one decimal, e.g. [1, 0, 0, 0, 0, -1] for coronal.
    pub orientation: Option<[f64; 6]>,
    pub calling_ae: Option<Vec<String>>,
    pub called_ae: Option<Vec<String>>,
    pub min_slices: Option<i64>,
    pub max_slices: Option<i64>,
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
    #[serde(default)]
    pub callers: Vec<CallerSettings>,
}

/// One allowed calling AE title, optionally bound to a peer address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    pub ae_title: String,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub dir: PathBuf,
    /// Refuse new instances (Out of Resources) when less free space than this remains, in MB.
    pub min_free_mb: u64,
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

/// The built-in defaults, identical to the values in `config/segnode.toml` (less the caller list).
const DEFAULTS: &str = r#"
[node]
name = ""
[dicom]
ae_title = "SEGNODE"
bind = "127.0.0.1"
port = 11112
accept_any = false
max_pdu = 262144
max_associations = 32
artim_timeout_s = 30
idle_timeout_s = 300
dimse_timeout_s = 60
[http]
bind = "127.0.0.1"
port = 0
[storage]
dir = "data/store"
min_free_mb = 512
[database]
url = "sqlite://data/segnode.db"
max_connections = 8
acquire_timeout_s = 5.0
[completion]
settle_s = 2.0
quiet_period_s = 60.0
spacing_tolerance = 0.1
poll_ms = 200
[log]
format = "text"
level = "info"
[workers]
enabled = true
lease_s = 30.0
max_attempts = 3
retry_base_s = 5.0
retry_max_s = 600.0
poll_ms = 1000
[dispatch]
max_attempts = 20
retry_base_s = 2.0
retry_max_s = 300.0
connect_timeout_s = 10.0
dimse_timeout_s = 60.0
poll_ms = 1000
outbox_dir = "data/outbox"
keep_sent_h = 72.0
[results]
series_number = 9001
series_description = "segnode {pipeline} segmentation"
"#;

impl Settings {
    /// Load the defaults, then `file` (when given; `config/segnode.toml` is used when it exists and no
    /// file is named), then the `SEGNODE_…` environment; validate the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(invalid(
                        "--config",
                        format!("file {} does not exist", path.display()),
                    ));
                }
                builder = builder.add_source(config::File::from(path).required(true));
            }
            None => {
                let default = Path::new("config/segnode.toml");
                if default.is_file() {
                    builder = builder.add_source(config::File::from(default).required(true));
                }
            }
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
                .source(Some(settings_environment(std::env::vars()))),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults plus a TOML snippet, not validated (unit tests of modules that take settings).
    #[doc(hidden)]
    pub fn load_from_str_for_tests(toml: &str) -> Settings {
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
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
        if d.port == 0 {
            return Err(invalid("dicom.port", "must be 1…65535"));
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
        if !(self.dispatch.keep_sent_h.is_finite() && self.dispatch.keep_sent_h >= 0.0) {
            return Err(invalid(
                "dispatch.keep_sent_h",
                "must be ≥ 0 (0 keeps results forever)",
            ));
        }
        let registry = Registry::new(&self.pipelines.external);
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
            if dest.port == 0 || dest.host.trim().is_empty() {
                return Err(invalid(
                    "destinations.port",
                    format!("`{}` needs a host and a port", dest.name),
                ));
            }
        }
        crate::routing::Router::from_settings(self).map_err(|e| ConfigError::Invalid {
            key: "rules",
            problem: e.to_string(),
        })?;
        Ok(())
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

    #[test]
    fn defaults_validate() {
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        s.validate().unwrap();
        assert_eq!(s.dicom.port, 11112);
        assert!(!s.dicom.accept_any);
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
        let mut s: Settings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        s.dicom.max_pdu = 10;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("dicom.max_pdu"), "{e}");
    }
}
