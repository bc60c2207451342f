//! The built-in defaults are the documented `config/segnode.toml` (issue 18): a node started from an
//! empty working directory, with no configuration file, lets the local DCMTK tools in with their default
//! AE titles and stores what they send; and `segnode config show --json` gives every key the value the
//! documented file gives it (only the origins differ).

mod support;

use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::node::{phantom, segnode_bin, sop_uid_of};
use support::*;

/// `segnode` with none of the test process's settings variables (`SEGNODE_<SECTION>__<KEY>`), run in
/// `dir`.
fn segnode_in(dir: &Path) -> Command {
    let mut cmd = Command::new(segnode_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("SEGNODE_") && k.contains("__") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG").current_dir(dir);
    cmd
}

/// A `segnode serve` process, killed when dropped.
struct Served {
    child: Child,
    log: PathBuf,
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `segnode serve` in `dir` with no `--config`, only the port overridden; wait (bounded) until it
/// listens.
fn serve_in(dir: &Path, port: u16, log: PathBuf) -> Served {
    let child = segnode_in(dir)
        .arg("serve")
        .env("SEGNODE_DICOM__PORT", port.to_string())
        // the console's default port (8080) would be shared by the tests running at once
        .env("SEGNODE_HTTP__PORT", free_port().to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start segnode");
    let mut served = Served { child, log };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("segnode exited at start ({status}):\n{}", served.log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "segnode did not listen within 20 s:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn empty_directory_lets_local_dcmtk_in() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let aside = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let node = serve_in(cwd.path(), port, aside.path().join("node.log"));

    // echoscu and storescu with their default calling AE titles (ECHOSCU, STORESCU)
    let echo = run_with_timeout(
        Command::new("echoscu").args(["-aec", "SEGNODE", "127.0.0.1", &port.to_string()]),
        Duration::from_secs(60),
    );
    assert!(
        echo.status.success() && !text(&echo).contains("Rejected"),
        "echoscu (ECHOSCU) refused: {}\n{}",
        text(&echo),
        node.log()
    );

    let series = aside.path().join("series");
    phantom(&series, &aside.path().join("truth.raw"), 2, 32);
    let file = files_under(&series)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "dcm"))
        .expect("a phantom slice");
    let store = run_with_timeout(
        Command::new("storescu")
            .args(["-aec", "SEGNODE", "127.0.0.1", &port.to_string()])
            .arg(&file),
        Duration::from_secs(120),
    );
    assert!(
        store.status.success() && !text(&store).contains("Rejected"),
        "storescu (STORESCU) refused: {}\n{}",
        text(&store),
        node.log()
    );
    // stored under the working directory's data/store (relative defaults resolve against it)
    let sop = sop_uid_of(&file);
    let stored = wait_for(
        "the instance in data/store",
        Duration::from_secs(30),
        || {
            files_under(&cwd.path().join("data/store"))
                .into_iter()
                .filter(|p| !p.components().any(|c| c.as_os_str() == ".incoming"))
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(&sop))
                })
        },
    );
    assert!(stored.is_file());
    assert!(cwd.path().join("data/segnode.db").is_file());

    // an unknown caller is refused, and the log says what to add to let it in
    let intruder = run_with_timeout(
        Command::new("echoscu").args([
            "-aet",
            "INTRUDER",
            "-aec",
            "SEGNODE",
            "127.0.0.1",
            &port.to_string(),
        ]),
        Duration::from_secs(60),
    );
    assert!(!intruder.status.success(), "{}", text(&intruder));
    let log = wait_for("the refusal in the log", Duration::from_secs(10), || {
        let log = node.log();
        log.contains("INTRUDER").then_some(log)
    });
    assert!(
        log.contains("[[dicom.callers]] ae_title = \"INTRUDER\" host = \"127.0.0.1\""),
        "{log}"
    );
}

/// `segnode config show --json` in `dir`, with `SEGNODE_DICOM__PORT` set.
fn config_show_json(dir: &Path) -> Value {
    let out = run_with_timeout(
        segnode_in(dir)
            .args(["config", "show", "--json"])
            .env("SEGNODE_DICOM__PORT", "11113"),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "config show: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("config show JSON")
}

#[test]
fn every_key_has_the_documented_value() {
    let empty = tempfile::tempdir().expect("tempdir");
    let with_file = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(with_file.path().join("config")).expect("mkdir");
    std::fs::copy(
        repo_root().join("config/segnode.toml"),
        with_file.path().join("config/segnode.toml"),
    )
    .expect("copy the documented file");

    let builtin = config_show_json(empty.path());
    let file = config_show_json(with_file.path());
    assert_eq!(builtin["file"], Value::Null);
    assert!(
        file["file"]
            .as_str()
            .is_some_and(|p| p.ends_with("config/segnode.toml")),
        "{}",
        file["file"]
    );
    assert_eq!(builtin["valid"], true);
    assert_eq!(file["valid"], true);

    let (b, f) = (
        builtin["settings"].as_object().expect("settings"),
        file["settings"].as_object().expect("settings"),
    );
    let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(b), keys(f), "the same keys");
    assert!(b.len() > 40, "{} keys only", b.len());
    for (key, from_default) in b {
        let from_file = &f[key];
        assert_eq!(
            from_default["value"], from_file["value"],
            "{key}: built-in default differs from the documented file"
        );
        if key == "dicom.port" {
            for v in [from_default, from_file] {
                assert_eq!(v["source"], "environment", "{key}");
                assert_eq!(v["origin"], "SEGNODE_DICOM__PORT", "{key}");
                assert_eq!(v["value"], 11113, "{key}");
            }
        } else {
            assert_eq!(from_default["source"], "default", "{key}");
            assert_eq!(from_file["source"], "file", "{key}");
            assert_eq!(from_file["origin"], file["file"], "{key}");
        }
    }
    // the callers the issue is about
    let callers: Vec<&str> = b["dicom.callers"]["value"]
        .as_array()
        .expect("caller list")
        .iter()
        .filter_map(|c| c["ae_title"].as_str())
        .collect();
    for ae in ["ECHOSCU", "STORESCU", "PYNETDICOM", "ORTHANC"] {
        assert!(callers.contains(&ae), "{ae} not in {callers:?}");
    }

    // the human-readable form shows the effective caller list and the origins
    let out = run_with_timeout(
        segnode_in(empty.path()).args(["config", "show"]),
        Duration::from_secs(30),
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(shown.contains("dicom.callers = [  # default"), "{shown}");
    assert!(
        shown.contains("{ ae_title = \"ECHOSCU\", host = \"127.0.0.1\" },"),
        "{shown}"
    );
}

#[test]
fn config_show_explains_a_configuration_that_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_with_timeout(
        segnode_in(dir.path())
            .args(["config", "show", "--json"])
            .env("SEGNODE_DICOM__MAX_PDU", "10"),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON even when invalid");
    assert_eq!(v["valid"], false);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("dicom.max_pdu")),
        "{v}"
    );
    assert_eq!(v["settings"]["dicom.max_pdu"]["value"], 10);
}

/// The main job out of the box (issue 13): from an empty directory, with no rule written by the user,
/// an axial chest CT is segmented by the default rule `chest-ct-lungs`, and the result is kept locally
/// (no destination) in data/outbox.
#[test]
fn default_configuration_segments_a_chest_ct() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let aside = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let node = serve_in(cwd.path(), port, aside.path().join("node.log"));
    let series = aside.path().join("chest");
    phantom(&series, &aside.path().join("truth.raw"), 48, 128);
    let store = run_with_timeout(
        Command::new("storescu")
            .args(["-aec", "SEGNODE", "127.0.0.1", &port.to_string()])
            .args(files_under(&series)),
        Duration::from_secs(120),
    );
    assert!(store.status.success(), "storescu: {}", text(&store));
    let job = wait_for("the lung job done", Duration::from_secs(180), || {
        let out = run_with_timeout(
            segnode_in(cwd.path()).args(["jobs", "list", "--json"]),
            Duration::from_secs(30),
        );
        let jobs: Value = serde_json::from_slice(&out.stdout).ok()?;
        jobs.as_array()?
            .iter()
            .find(|j| j["state"] == "DONE" || j["state"] == "DEAD" || j["state"] == "FAILED")
            .cloned()
    });
    assert_eq!(job["state"], "DONE", "{job}\n{}", node.log());
    assert_eq!(job["pipeline"], "lung");
    assert_eq!(job["rules"], "chest-ct-lungs");
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let labels: Vec<&str> = result["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert_eq!(labels, ["Right lung", "Left lung"], "{result}");
    let seg = cwd.path().join("data/outbox").join(format!(
        "{}.dcm",
        result["seg_sop_instance_uid"].as_str().unwrap()
    ));
    assert!(seg.is_file(), "the SEG is kept locally: {}", seg.display());
    assert!(cwd.path().join("data/admin-token").is_file());
}
