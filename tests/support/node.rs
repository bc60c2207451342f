//! A segnode process for the network tests: started on a free 127.0.0.1 port with its own store and
//! index in a temporary directory (or its own PostgreSQL database, see `support::postgres`), killed
//! when dropped. Also the DCMTK / pynetdicom runners and index
//! queries the tests share.
#![allow(dead_code)]

use super::*;
use serde_json::Value;
use std::io::Read;
use std::net::TcpStream;
use std::process::Child;

/// The repository's configuration without its default routing rules, plus a test's `extra_toml`: a test
/// node routes only by the rules its test writes (none: `rules = []`, since a file without rules would
/// keep the built-in ones).
pub fn test_config(base: &str, extra_toml: &str) -> String {
    let begin = "# --- default rules (begin) ---";
    let end = "# --- default rules (end) ---";
    let base = match (base.find(begin), base.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{}", &base[..b], &base[e + end.len()..]),
        _ => base.to_string(),
    };
    let no_rules = if extra_toml.contains("[[rules]]") {
        ""
    } else {
        "rules = []\n"
    };
    format!("{no_rules}{base}\n{extra_toml}\n")
}

/// A running segnode process.
pub struct NodeProc {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub env: Vec<(String, String)>,
    /// The config file: the repository's plus the test's extra TOML.
    pub config: PathBuf,
    /// Subcommand the process runs (`serve`, or `worker` for a worker-only process).
    pub role: String,
    child: Option<Child>,
    /// Started once already: a restart keeps its ports (tests reconnect to them).
    started: bool,
}

pub fn segnode_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_segnode"))
}

impl NodeProc {
    /// Start a node with the default config plus `env` overrides (`SEGNODE_…`).
    pub fn start(env: &[(&str, &str)]) -> NodeProc {
        NodeProc::start_with(env, "")
    }

    /// Start with `extra_toml` appended to the repository config (rules, destinations, pipelines).
    pub fn start_with(env: &[(&str, &str)], extra_toml: &str) -> NodeProc {
        let mut node = NodeProc::prepare(env, extra_toml);
        node.spawn();
        node
    }

    /// A node's directory, port and config, not started yet.
    pub fn prepare(env: &[(&str, &str)], extra_toml: &str) -> NodeProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("segnode.toml");
        let base =
            std::fs::read_to_string(repo_root().join("config/segnode.toml")).expect("repo config");
        std::fs::write(&config, test_config(&base, extra_toml)).expect("write config");
        let port = free_port();
        let mut all: Vec<(String, String)> = vec![
            ("SEGNODE_DICOM__PORT".into(), port.to_string()),
            // every test node has a console port of its own (the default, 8080, would be shared)
            ("SEGNODE_HTTP__PORT".into(), free_port().to_string()),
            (
                "SEGNODE_HTTP__ADMIN_TOKEN_FILE".into(),
                dir.path().join("admin-token").display().to_string(),
            ),
            (
                "SEGNODE_STORAGE__DIR".into(),
                dir.path().join("store").display().to_string(),
            ),
            (
                "SEGNODE_DATABASE__URL".into(),
                super::postgres::database_url(dir.path()),
            ),
            ("SEGNODE_STORAGE__MIN_FREE_MB".into(), "0".into()),
            // the retention watermark follows the real disk: off unless a test asks for it
            ("SEGNODE_STORAGE__PURGE_ABOVE_PERCENT".into(), "0".into()),
            (
                "SEGNODE_DISPATCH__OUTBOX_DIR".into(),
                dir.path().join("outbox").display().to_string(),
            ),
        ];
        for (k, v) in env {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        NodeProc {
            dir,
            port,
            env: all,
            config,
            role: "serve".into(),
            child: None,
            started: false,
        }
    }

    /// Another process (e.g. a `segnode worker`) with the same config, database and storage (and a
    /// console port of its own).
    pub fn sibling(&self, role: &str) -> NodeProc {
        let mut env = self.env.clone();
        env.retain(|(k, _)| k != "SEGNODE_HTTP__PORT");
        env.push(("SEGNODE_HTTP__PORT".into(), free_port().to_string()));
        NodeProc {
            dir: tempfile::tempdir().expect("tempdir"),
            port: self.port,
            env,
            config: self.config.clone(),
            role: role.into(),
            child: None,
            started: false,
        }
    }

    /// (Re)start the process with the same directory and port.
    pub fn spawn(&mut self) {
        self.spawn_process();
        if self.role != "serve" {
            return;
        }
        self.wait_listening();
    }

    /// Start the process without waiting for it to listen (a start expected to abort).
    pub fn spawn_process(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node.log"))
            .expect("log file");
        let child = Command::new(segnode_bin())
            .args(["--config", &self.config.display().to_string(), &self.role])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "segnode=debug")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start segnode");
        self.child = Some(child);
    }

    /// Wait until the DICOM port and the console's port (when it has one) accept connections. A
    /// first start that fails because a port picked free was taken meanwhile by another test's
    /// process (the log says "cannot listen") starts again on new ports, at most twice.
    fn wait_listening(&mut self) {
        let mut retries = if self.started { 0 } else { 2 };
        self.started = true;
        let mut log_from = 0;
        let mut start = Instant::now();
        loop {
            let http = self
                .env
                .iter()
                .find(|(k, _)| k == "SEGNODE_HTTP__PORT")
                .and_then(|(_, v)| v.parse::<u16>().ok())
                .filter(|p| *p != 0);
            let up = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(self.port) && http.is_none_or(up) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = self.log();
                let this_start = log.get(log_from..).unwrap_or("");
                if retries > 0 && this_start.contains("cannot listen") {
                    retries -= 1;
                    log_from = log.len();
                    self.child = None;
                    self.port = free_port();
                    for (k, v) in self.env.iter_mut() {
                        if k == "SEGNODE_DICOM__PORT" {
                            *v = self.port.to_string();
                        } else if k == "SEGNODE_HTTP__PORT" && v != "0" {
                            *v = free_port().to_string();
                        }
                    }
                    self.spawn_process();
                    start = Instant::now();
                    continue;
                }
                panic!("segnode exited at start ({status}):\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "segnode did not listen within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The console's port (`SEGNODE_HTTP__PORT`).
    pub fn http_port(&self) -> u16 {
        self.env
            .iter()
            .find(|(k, _)| k == "SEGNODE_HTTP__PORT")
            .and_then(|(_, v)| v.parse().ok())
            .expect("a console port")
    }

    /// The admin token the node generated at its first start.
    pub fn admin_token(&self) -> String {
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == "SEGNODE_HTTP__ADMIN_TOKEN_FILE")
            .map(|(_, v)| PathBuf::from(v))
            .expect("a token file");
        wait_for("the admin token file", Duration::from_secs(20), || {
            std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        })
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send a signal (e.g. "-9", "-TERM") and wait for the process to exit; returns its exit code.
    pub fn signal(&mut self, sig: &str) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(40) {
                let _ = child.kill();
                panic!(
                    "segnode did not exit within 40 s after kill {sig}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("segnode did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// A `segnode` CLI command against this node's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(segnode_bin())
                .args(["--config", &self.config.display().to_string()])
                .args(args)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(self.dir.path()),
            Duration::from_secs(30),
        )
    }

    /// `segnode series list --json`.
    pub fn series(&self) -> Vec<Value> {
        let out = self.cli(&["series", "list", "--json"]);
        assert!(
            out.status.success(),
            "series list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("series list JSON");
        v.as_array().cloned().expect("array")
    }

    /// `segnode series show UID --json`.
    pub fn series_show(&self, uid: &str) -> Value {
        let out = self.cli(&["series", "show", uid, "--json"]);
        assert!(
            out.status.success(),
            "series show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("series show JSON")
    }

    /// Wait (bounded) until every listed series is COMPLETE and `count` series exist.
    pub fn wait_complete(&self, count: usize, limit: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let s = self.series();
            if s.len() == count && s.iter().all(|x| x["state"] == "COMPLETE") {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "series not complete within {limit:?}: {s:#?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `segnode … --json` listing as an array.
    pub fn cli_list(&self, args: &[&str]) -> Vec<Value> {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("JSON listing")
            .as_array()
            .expect("array")
            .clone()
    }

    /// `segnode jobs list --json`.
    pub fn jobs(&self) -> Vec<Value> {
        self.cli_list(&["jobs", "list", "--json"])
    }

    /// `segnode outbox list --json`.
    pub fn outbox(&self) -> Vec<Value> {
        self.cli_list(&["outbox", "list", "--json"])
    }

    /// A series' history as "event detail" lines, oldest first.
    pub fn history(&self, uid: &str) -> Vec<String> {
        self.series_show(uid)["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["event"].as_str().unwrap_or(""),
                    e["detail"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Instance files in the store (not the temporary area nor the ingest journal).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.store_dir())
            .into_iter()
            .filter(|p| {
                !p.components()
                    .any(|c| c.as_os_str() == ".incoming" || c.as_os_str() == ".journal")
            })
            .collect()
    }

    /// Temporary files left in the store's `.incoming` area (partial files).
    pub fn incoming_files(&self) -> Vec<PathBuf> {
        files_under(&self.store_dir().join(".incoming"))
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// TOML for a destination called `pacs` at a DICOM port on 127.0.0.1 (AE ORTHANC).
pub fn destination_toml(port: u16) -> String {
    format!("[[destinations]]\nname = \"pacs\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {port}\n")
}

/// A chest phantom (`segnode-phantom`, run in-process): the series in `dir`, its truth label map in `truth`.
pub fn phantom(dir: &Path, truth: &Path, slices: usize, matrix: usize) {
    phantom_with(dir, truth, slices, matrix, &[]);
}

/// [`phantom`] with more arguments (`--seed N` gives other UIDs and anatomy).
pub fn phantom_with(dir: &Path, truth: &Path, slices: usize, matrix: usize, extra: &[&str]) {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for a in [
        "--slices",
        &slices.to_string(),
        "--matrix",
        &matrix.to_string(),
    ] {
        args.push(a.into());
    }
    args.extend(["--out".into(), dir.as_os_str().to_owned()]);
    args.extend(["--truth".into(), truth.as_os_str().to_owned()]);
    args.extend(extra.iter().map(|a| a.into()));
    super::phantom_cli(&args);
}

/// Generate a synthetic CT series with tests/py/gen_ct_series.py; returns its files and series UID.
pub fn gen_series(
    dir: &Path,
    slices: usize,
    size: usize,
    seed: u64,
    extra: &[&str],
) -> (Vec<PathBuf>, String) {
    let out = run_py(
        "gen_ct_series.py",
        &[
            &[
                dir.to_str().expect("utf-8 path"),
                "--slices",
                &slices.to_string(),
                "--size",
                &size.to_string(),
                "--seed",
                &seed.to_string(),
            ][..],
            extra,
        ]
        .concat(),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (files_under(dir), uid)
}

/// DCMTK storescu of `files` to the node; returns its output.
pub fn storescu(port: u16, files: &[PathBuf], extra: &[&str]) -> Output {
    let mut cmd = Command::new("storescu");
    cmd.args(["-aet", "STORESCU", "-aec", "SEGNODE"])
        .args(extra)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(files);
    run_with_timeout(&mut cmd, Duration::from_secs(300))
}

/// The data set bytes of a Part 10 file (everything after the file meta group).
pub fn dataset_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("read file");
    assert_eq!(
        &bytes[128..132],
        b"DICM",
        "{} is not Part 10",
        path.display()
    );
    // (0002,0000) UL group length: tag(4) VR(2) len(2) value(4) at offset 132
    let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
    bytes[144 + group_len..].to_vec()
}

/// The transfer syntax in a Part 10 file's meta (via dcmdump).
pub fn meta_transfer_syntax(path: &Path) -> String {
    let out = run_with_timeout(
        Command::new("dcmdump")
            .args(["-M", "-Un", "+P", "0002,0010"])
            .arg(path),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// pynetdicom peer (tests/py/dicom_peer.py); returns the JSON lines it printed and the output.
pub fn py_peer(args: &[&str]) -> (Vec<Value>, Output) {
    let out = run_py("dicom_peer.py", args, Duration::from_secs(300));
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    (lines, out)
}

/// DCMTK echoscu with a calling AE; returns the output.
pub fn echoscu(port: u16, calling: &str, called: &str) -> Output {
    run_with_timeout(
        Command::new("echoscu").args([
            "-aet",
            calling,
            "-aec",
            called,
            "127.0.0.1",
            &port.to_string(),
        ]),
        Duration::from_secs(60),
    )
}

/// The SOP Instance UID of a Part 10 file (from its meta).
pub fn sop_uid_of(path: &Path) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::SOP_CLASS_UID)
        .open_file(path)
        .expect("open sent file");
    obj.meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}

/// pynetdicom (tests/py/dicom_peer.py) sending `files` in the background, `delay_s` between files; its
/// JSON lines (one per response) go to `log`.
pub fn pynetdicom_send(port: u16, files: &[PathBuf], delay_s: f64, log: &Path) -> Child {
    Command::new(python())
        .arg(py_script("dicom_peer.py"))
        .args(["send", &port.to_string()])
        .args(files)
        .args(["--delay", &delay_s.to_string()])
        .stdout(std::fs::File::create(log).expect("sender log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start pynetdicom sender")
}

/// Wait (bounded: kill and panic after `limit`) for a child; returns whether it exited with success.
pub fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The files a [`pynetdicom_send`] log reports a success status for.
pub fn acknowledged(log: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["status"] == 0)
        .filter_map(|l| l["file"].as_str().map(PathBuf::from))
        .collect()
}

/// The SOP Instance UIDs of a series as the node's index lists them.
pub fn indexed_sops(node: &NodeProc, series_uid: &str) -> std::collections::HashSet<String> {
    node.series_show(series_uid)["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["sop_uid"].as_str().map(str::to_string))
        .collect()
}

/// Every acknowledged file's instance is in `stored`; returns the files a sender still has to send.
pub fn check_acknowledged_then_rest(
    files: &[PathBuf],
    acked: &[PathBuf],
    stored: &std::collections::HashSet<String>,
) -> Vec<PathBuf> {
    for f in acked {
        assert!(
            stored.contains(&sop_uid_of(f)),
            "acknowledged {} lost",
            f.display()
        );
    }
    files
        .iter()
        .filter(|f| !stored.contains(&sop_uid_of(f)))
        .cloned()
        .collect()
}
