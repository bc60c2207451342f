//! The docker compose scale-out (docker-compose.yml, Dockerfile, deploy/compose/): the compose file is
//! valid and has the promised shape, the segnode configuration it mounts is one segnode accepts and routes
//! with, and the demo PACS's auto-routing Lua script forwards CT series to segnode but never the SEG
//! results segnode sends back (run in Debian's Orthanc against a DCMTK storescp playing segnode).
//!
//! No Docker daemon is needed: `docker compose config` (v2 plugin) or `docker-compose config` (Debian's
//! v1, scripts/apt-packages.txt) only parse and normalise the file.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::node::segnode_bin;
use support::orthanc::OrthancProc;
use support::storescp::StoreScp;
use support::*;

const SEGNODE_SERVICES: [&str; 3] = ["receiver", "worker-1", "worker-2"];
const SHARED_PATH: &str = "/var/lib/segnode";

// --- the normalised compose model ------------------------------------------------------------------------

/// `docker compose config` of the repository's docker-compose.yml as JSON: the v2 plugin when it is
/// there (`--format json`), else Debian's docker-compose v1 (YAML, converted with the system Python's
/// PyYAML, a dependency of that package).
fn compose_model() -> Value {
    let root = repo_root();
    let file = root.join("docker-compose.yml");
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let (out, yaml) = if v2 {
        let out = run_with_timeout(
            Command::new("docker")
                .args(["compose", "-f"])
                .arg(&file)
                .args(["config", "--format", "json"])
                .current_dir(&root),
            Duration::from_secs(120),
        );
        (out, false)
    } else {
        assert!(
            Command::new("docker-compose")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "neither `docker compose` nor `docker-compose` works: run scripts/install-test-deps"
        );
        let out = run_with_timeout(
            Command::new("docker-compose")
                .arg("-f")
                .arg(&file)
                .arg("config")
                .current_dir(&root),
            Duration::from_secs(120),
        );
        (out, true)
    };
    assert!(
        out.status.success(),
        "compose config rejects docker-compose.yml:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !yaml {
        return serde_json::from_slice(&out.stdout).expect("compose config JSON");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let normalised = dir.path().join("compose.yml");
    std::fs::write(&normalised, &out.stdout).expect("write normalised compose file");
    let conv = run_with_timeout(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
            ])
            .arg(&normalised),
        Duration::from_secs(60),
    );
    assert!(
        conv.status.success(),
        "YAML to JSON failed (python3-yaml comes with docker-compose): {}",
        String::from_utf8_lossy(&conv.stderr)
    );
    serde_json::from_slice(&conv.stdout).expect("converted compose JSON")
}

fn service<'a>(model: &'a Value, name: &str) -> &'a Value {
    let s = &model["services"][name];
    assert!(s.is_object(), "no service `{name}` in docker-compose.yml");
    s
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A service's environment (map or `KEY=VALUE` list form).
fn environment(svc: &Value) -> BTreeMap<String, String> {
    match &svc["environment"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|e| {
                let (k, v) = e.as_str()?.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A service's mounts as (source, target) (short `src:dst[:mode]` or long form).
fn mounts(svc: &Value) -> Vec<(String, String)> {
    svc["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    Value::String(s) => {
                        let mut parts = s.split(':');
                        Some((parts.next()?.to_string(), parts.next()?.to_string()))
                    }
                    Value::Object(_) => Some((scalar(&m["source"]), scalar(&m["target"]))),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Published → container ports.
fn ports(svc: &Value) -> Vec<(String, String)> {
    svc["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| match p {
                    Value::String(s) => {
                        let (published, target) = s.rsplit_once(':')?;
                        let published = published.rsplit(':').next()?;
                        Some((published.to_string(), target.to_string()))
                    }
                    Value::Object(_) => Some((scalar(&p["published"]), scalar(&p["target"]))),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// depends_on as service → condition (the list form means `service_started`).
fn depends_on(svc: &Value) -> BTreeMap<String, String> {
    match &svc["depends_on"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), scalar(&v["condition"])))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|k| (scalar(k), "service_started".to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(scalar).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn segnode_env_without_inherited(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("SEGNODE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

// --- the compose file ----------------------------------------------------------------------------------

#[test]
fn compose_file_describes_the_scale_out() {
    let model = compose_model();
    let names: BTreeSet<&str> = model["services"]
        .as_object()
        .expect("services")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["postgres", "receiver", "worker-1", "worker-2", "orthanc"]),
        "services"
    );
    for name in &names {
        let svc = service(&model, name);
        let test = words(&svc["healthcheck"]["test"]);
        assert!(
            test.len() >= 2 && matches!(test[0].as_str(), "CMD" | "CMD-SHELL"),
            "service {name} needs a health check, has {test:?}"
        );
        assert_eq!(
            scalar(&svc["restart"]),
            "unless-stopped",
            "restart policy of {name}"
        );
    }

    // PostgreSQL: the index of every segnode process, on its own volume, checked by pg_isready
    let pg = service(&model, "postgres");
    assert!(
        scalar(&pg["image"]).starts_with("postgres:15"),
        "{}",
        pg["image"]
    );
    assert!(words(&pg["healthcheck"]["test"])
        .iter()
        .any(|w| w.contains("pg_isready")));
    assert!(
        mounts(pg)
            .iter()
            .any(|(s, t)| t == "/var/lib/postgresql/data" && !s.starts_with('/')),
        "postgres data on a named volume: {:?}",
        mounts(pg)
    );
    let pg_env = environment(pg);

    // receiver and workers: one image, the same volume at the same path, the PostgreSQL database
    let mut shared_volume = None;
    let mut node_names = BTreeSet::new();
    for name in SEGNODE_SERVICES {
        let svc = service(&model, name);
        let env = environment(svc);
        let url = env
            .get("SEGNODE_DATABASE__URL")
            .unwrap_or_else(|| panic!("{name}: no SEGNODE_DATABASE__URL"));
        assert!(
            url.starts_with("postgres://") && url.contains("@postgres:5432/"),
            "{name}: database {url}"
        );
        assert!(
            url.contains(&format!(
                "{}:{}@",
                pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"]
            )) && url.ends_with(&format!("/{}", pg_env["POSTGRES_DB"])),
            "{name}: {url} does not match the postgres service's user, password and database"
        );
        for key in ["SEGNODE_STORAGE__DIR", "SEGNODE_DISPATCH__OUTBOX_DIR"] {
            let dir = env.get(key).unwrap_or_else(|| panic!("{name}: no {key}"));
            assert!(
                dir.starts_with(&format!("{SHARED_PATH}/")),
                "{name}: {key}={dir} is not on the shared volume"
            );
        }
        let m = mounts(svc);
        let (volume, _) = m
            .iter()
            .find(|(_, t)| t == SHARED_PATH)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {SHARED_PATH}: {m:?}"));
        assert!(
            !volume.starts_with('/') && model["volumes"].get(volume).is_some(),
            "{name}: {SHARED_PATH} must be a named volume, is {volume}"
        );
        match &shared_volume {
            None => shared_volume = Some(volume.clone()),
            Some(v) => assert_eq!(v, volume, "{name} mounts another volume"),
        }
        assert!(
            m.iter()
                .any(|(s, t)| s.ends_with("deploy/compose/segnode.toml")
                    && t == "/etc/segnode/segnode.toml"),
            "{name}: deploy/compose/segnode.toml not mounted at /etc/segnode/segnode.toml: {m:?}"
        );
        assert_eq!(
            scalar(&svc["image"]),
            scalar(&service(&model, "receiver")["image"]),
            "{name}: image"
        );
        assert_eq!(
            depends_on(svc).get("postgres").map(String::as_str),
            Some("service_healthy"),
            "{name} must wait for a healthy postgres"
        );
        let node_name = env
            .get("SEGNODE_NODE__NAME")
            .unwrap_or_else(|| panic!("{name}: no SEGNODE_NODE__NAME"));
        assert!(
            node_names.insert(node_name.clone()),
            "{name}: node name {node_name} used twice"
        );
    }

    let receiver = service(&model, "receiver");
    assert_eq!(words(&receiver["command"]), ["serve"]);
    assert_eq!(
        environment(receiver)
            .get("SEGNODE_WORKERS__ENABLED")
            .map(String::as_str),
        Some("false"),
        "the receiver runs no pipelines"
    );
    assert!(
        ports(receiver).contains(&("11112".into(), "11112".into())),
        "receiver ports {:?}",
        ports(receiver)
    );
    let check = words(&receiver["healthcheck"]["test"]).join(" ");
    assert!(
        check.contains("segnode --config /etc/segnode/segnode.toml echo SEGNODE@127.0.0.1:11112"),
        "receiver health check: {check}"
    );
    for name in ["worker-1", "worker-2"] {
        let svc = service(&model, name);
        assert_eq!(words(&svc["command"]), ["worker"], "{name} command");
        assert!(
            ports(svc).is_empty(),
            "{name} publishes nothing: {:?}",
            ports(svc)
        );
        let check = words(&svc["healthcheck"]["test"]).join(" ");
        assert!(
            check.ends_with("segnode --config /etc/segnode/segnode.toml status"),
            "{name} health check: {check}"
        );
        assert_eq!(
            environment(svc)
                .get("SEGNODE_WORKERS__ENABLED")
                .map(String::as_str)
                .unwrap_or("true"),
            "true",
            "{name} runs pipelines"
        );
    }

    // Orthanc: the demo PACS, configured by the mounted JSON and Lua files, started after segnode
    let orthanc = service(&model, "orthanc");
    assert!(scalar(&orthanc["image"]).contains("orthanc"));
    let p = ports(orthanc);
    for port in ["8042", "4242"] {
        assert!(
            p.contains(&(port.into(), port.into())),
            "orthanc publishes {port}: {p:?}"
        );
    }
    let m = mounts(orthanc);
    for (file, target) in [
        ("deploy/compose/orthanc.json", "/etc/orthanc/orthanc.json"),
        (
            "deploy/compose/segnode-autorouting.lua",
            "/etc/orthanc/segnode-autorouting.lua",
        ),
    ] {
        assert!(
            m.iter().any(|(s, t)| s.ends_with(file) && t == target),
            "orthanc: {file} not mounted at {target}: {m:?}"
        );
    }
    assert!(
        m.iter()
            .any(|(s, t)| t == "/var/lib/orthanc/db" && !s.starts_with('/')),
        "orthanc storage on a named volume: {m:?}"
    );
    assert_eq!(
        depends_on(orthanc).get("receiver").map(String::as_str),
        Some("service_healthy"),
        "Orthanc forwards to segnode: it starts once the receiver is healthy"
    );
}

// --- the segnode configuration of the deployment ----------------------------------------------------------

/// `segnode --config deploy/compose/segnode.toml rules test DIR` with `env` (and no SEGNODE_ variable of
/// the test's own environment); returns (success, stdout + stderr).
fn rules_test(env: &BTreeMap<String, String>, dir: &Path) -> (bool, String) {
    let root = repo_root();
    let mut cmd = Command::new(segnode_bin());
    segnode_env_without_inherited(&mut cmd)
        .arg("--config")
        .arg(root.join("deploy/compose/segnode.toml"))
        .args(["rules", "test"])
        .arg(dir)
        .envs(env)
        .current_dir(&root);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Write a phantom series with `segnode-phantom` (chest CT or coronal temporal-bone CBCT), small.
fn phantom(dir: &Path, args: &[&str]) {
    let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    argv.extend([std::ffi::OsStr::new("--out"), dir.as_os_str()]);
    phantom_cli(&argv);
}

#[test]
fn compose_segnode_config_is_accepted_and_routes_to_orthanc() {
    let data = tempfile::tempdir().expect("tempdir");
    let chest = data.path().join("chest");
    let cbct = data.path().join("cbct");
    phantom(
        &chest,
        &["--kind", "chest", "--matrix", "32", "--slices", "40"],
    );
    phantom(&cbct, &["--kind", "cbct", "--cube", "16"]);

    let model = compose_model();
    for name in SEGNODE_SERVICES {
        let mut env = environment(service(&model, name));
        // [node] name is checked by compose_node_names_are_accepted (it comes with the PostgreSQL backend)
        env.remove("SEGNODE_NODE__NAME");
        let (ok, out) = rules_test(&env, &chest);
        assert!(
            ok,
            "segnode rejects deploy/compose/segnode.toml with the {name} environment:\n{out}"
        );
        assert!(
            out.contains("rule chest-ct-lungs → pipelines lung → destinations orthanc"),
            "{name}: the chest CT must go to the lung pipeline and back to Orthanc:\n{out}"
        );
        assert!(!out.contains("cbct-cochlear"), "{name}: {out}");
        let (ok, out) = rules_test(&env, &cbct);
        assert!(ok, "{name}: {out}");
        assert!(
            out.contains("rule cbct-cochlear → pipelines cochlear → destinations orthanc"),
            "{name}: the coronal CBCT must go to the cochlear pipeline and back to Orthanc:\n{out}"
        );
        assert!(!out.contains("chest-ct-lungs"), "{name}: {out}");
    }

    // the file agrees with the compose file and the Orthanc configuration on names, hosts and ports
    let toml = std::fs::read_to_string(repo_root().join("deploy/compose/segnode.toml"))
        .expect("deploy/compose/segnode.toml");
    let orthanc: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/compose/orthanc.json"))
            .expect("deploy/compose/orthanc.json"),
    )
    .expect("orthanc.json is JSON");
    let modality = &orthanc["DicomModalities"]["segnode"];
    assert_eq!(
        modality["AET"], "SEGNODE",
        "Orthanc calls segnode by its AE title"
    );
    assert_eq!(
        modality["Host"], "receiver",
        "Orthanc reaches the receiver service"
    );
    assert_eq!(modality["Port"], 11112);
    assert!(toml.contains("ae_title = \"SEGNODE\""), "{toml}");
    assert_eq!(
        orthanc["DicomAet"], "ORTHANC",
        "segnode's destination and caller entry"
    );
    assert!(
        toml.contains("host = \"orthanc\"") && toml.contains("port = 4242"),
        "{toml}"
    );
    assert_eq!(orthanc["DicomPort"], 4242);
    assert!(
        orthanc["LuaScripts"].as_array().is_some_and(|a| a
            .iter()
            .any(|s| s == "/etc/orthanc/segnode-autorouting.lua")),
        "the mounted Lua script is loaded: {}",
        orthanc["LuaScripts"]
    );
}

#[test]
fn compose_node_names_are_accepted() {
    // The complete environment of each segnode service, SEGNODE_NODE__NAME included: needs the `[node]`
    // section of the PostgreSQL scale-out (until it is there, segnode refuses the unknown key).
    let data = tempfile::tempdir().expect("tempdir");
    phantom(
        data.path(),
        &["--kind", "chest", "--matrix", "32", "--slices", "40"],
    );
    let model = compose_model();
    for name in SEGNODE_SERVICES {
        let env = environment(service(&model, name));
        assert!(env.contains_key("SEGNODE_NODE__NAME"), "{name}");
        let (ok, out) = rules_test(&env, data.path());
        assert!(
            ok && out.contains("rule chest-ct-lungs"),
            "segnode rejects the complete {name} environment (does it know [node] name?):\n{out}"
        );
    }
}

// --- the Orthanc auto-routing ------------------------------------------------------------------------------

/// `segnode send --aet AET DIR ORTHANC@127.0.0.1:PORT` (what segnode does with its results).
fn segnode_send(aet: &str, dir: &Path, port: u16) {
    let out = run_with_timeout(
        Command::new(segnode_bin())
            .args(["send", "--aet", aet])
            .arg(dir)
            .arg(format!("ORTHANC@127.0.0.1:{port}")),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "segnode send {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn series_uid_of(file: &Path) -> String {
    let out = run_with_timeout(
        Command::new("dcmdump").args(["+P", "0020,000e"]).arg(file),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn orthanc_autorouting_forwards_ct_but_not_results() {
    let root = repo_root();
    let deploy: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/compose/orthanc.json")).expect("orthanc.json"),
    )
    .expect("orthanc.json is JSON");
    let segnode = StoreScp::start("SEGNODE");
    // The deployment's configuration, with the test's paths, loopback ports, no authentication, and the
    // `segnode` modality pointing at the storescp; StableAge 1 s to keep the test short.
    let orthanc = OrthancProc::start_with(|cfg, _dir| {
        let local = cfg.as_object().cloned().expect("object");
        *cfg = deploy.clone();
        for (k, v) in local {
            cfg[k] = v;
        }
        cfg["StableAge"] = 1.into();
        cfg["LuaScripts"] =
            serde_json::json!([root.join("deploy/compose/segnode-autorouting.lua")]);
        cfg["DicomModalities"]["segnode"]["Host"] = "127.0.0.1".into();
        cfg["DicomModalities"]["segnode"]["Port"] = segnode.port.into();
    });

    let data = tempfile::tempdir().expect("tempdir");
    // a result: a SEG sent by segnode (AE SEGNODE); made from a CT slice by changing its class and modality
    let (ct, _) = support::node::gen_series(&data.path().join("ct"), 3, 32, 911, &[]);
    let seg_dir = data.path().join("seg");
    std::fs::create_dir_all(&seg_dir).unwrap();
    let seg = seg_dir.join("seg.dcm");
    std::fs::copy(&ct[0], &seg).unwrap();
    let out = run_with_timeout(
        Command::new("dcmodify")
            .args([
                "-nb",
                "-gse",
                "-gin",
                "-m",
                "(0008,0060)=SEG",
                "-m",
                "(0008,0016)=1.2.840.10008.5.1.4.1.1.66.4",
            ])
            .arg(&seg),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "dcmodify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    segnode_send("SEGNODE", &seg_dir, orthanc.dicom_port);
    // a CT that segnode sent (not expected, but must not bounce back either)
    let (_, from_segnode_uid) =
        support::node::gen_series(&data.path().join("from-segnode"), 3, 32, 912, &[]);
    segnode_send(
        "SEGNODE",
        &data.path().join("from-segnode"),
        orthanc.dicom_port,
    );
    // a CT series from a modality: the one to forward
    let (scan, scan_uid) = support::node::gen_series(&data.path().join("scan"), 5, 32, 913, &[]);
    let out = support::node::storescu(orthanc.dicom_port, &scan, &[]);
    assert!(
        out.status.success(),
        "storescu to Orthanc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let start = Instant::now();
    loop {
        let log = orthanc.log();
        let skipped_seg = log.contains("is a SEG (a result): not forwarded");
        let skipped_own = log.contains("came from segnode: not forwarded");
        let n = segnode.received().len();
        // done when every series was decided on, or as soon as too much was forwarded
        if (skipped_seg && skipped_own && n >= scan.len()) || n > scan.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "auto-routing did not finish within 90 s: received {:?}\n{log}",
            segnode.received()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // let anything wrongly queued arrive before counting
    std::thread::sleep(Duration::from_secs(3));
    let received = segnode.received();
    assert_eq!(
        received.len(),
        scan.len(),
        "exactly the CT series from the modality is forwarded: {received:?}\n{}",
        orthanc.log()
    );
    for f in &received {
        let uid = series_uid_of(f);
        assert_eq!(uid, scan_uid, "{} forwarded", f.display());
        assert_ne!(uid, from_segnode_uid);
    }
    assert_eq!(
        orthanc.series_of_modality("SEG").len(),
        1,
        "the SEG reached Orthanc"
    );
    assert_eq!(orthanc.series_of_modality("CT").len(), 2);
}

// --- the image ------------------------------------------------------------------------------------------

#[test]
fn dockerfile_builds_a_small_non_root_image_for_compose() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines[0], "# syntax=docker/dockerfile:1");
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "multi-stage: a build and a runtime stage: {froms:?}"
    );
    assert!(froms[0].starts_with("FROM rust:1-bookworm"), "{froms:?}");
    assert_eq!(*froms[1], "FROM debian:bookworm-slim");
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert_ne!(user.trim_start_matches("USER ").trim(), "root");
    // the compose file relies on these: `segnode` on the PATH (health checks), the entrypoint taking the
    // mounted configuration, and `command` naming the subcommand
    assert!(lines.contains(&r#"ENTRYPOINT ["segnode", "--config", "/etc/segnode/segnode.toml"]"#));
    assert!(lines.contains(&r#"CMD ["serve"]"#));
    assert!(text.contains("/usr/local/bin/segnode"));
    // the build stage has every workspace crate and the documented configuration (compiled in)
    for copy in [
        "COPY crates ./crates",
        "COPY src ./src",
        "COPY config ./config",
    ] {
        assert!(lines.contains(&copy), "the build stage needs `{copy}`");
    }
    // the environment overrides every file: the image must not pin the database or the storage
    for key in [
        "SEGNODE_DATABASE__URL",
        "SEGNODE_STORAGE__DIR",
        "SEGNODE_DISPATCH__OUTBOX_DIR",
    ] {
        assert!(
            !lines.iter().any(|l| !l.starts_with('#') && l.contains(key)),
            "the Dockerfile sets {key}"
        );
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target", ".venv", "data"] {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == entry),
            ".dockerignore must exclude {entry}"
        );
    }
}
