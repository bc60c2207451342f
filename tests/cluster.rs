//! Beyond one machine: several segnode processes — receivers (`serve`) and workers (`worker`) — on one
//! PostgreSQL database (a real server the harness starts) and one storage path, with DCMTK, pynetdicom
//! and Orthanc as the peers. Always PostgreSQL: a shared database is what these tests are about.

mod support;

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::node::*;
use support::orthanc::OrthancProc;
use support::postgres::{new_database, PgServer};
use support::*;

const LUNG_RULE: &str = "[[rules]]\nname = \"chest-ct\"\npipelines = [\"lung\"]\ndestinations = [\"pacs\"]\n[rules.match]\nmodality = [\"CT\"]\nmin_slices = 15\n";

/// A receiver on a new PostgreSQL database: `serve` with no in-process workers (unless `workers`).
fn receiver(name: &str, workers: bool, extra_env: &[(&str, &str)], toml: &str) -> NodeProc {
    let url = new_database();
    let mut env = vec![
        ("SEGNODE_DATABASE__URL", url.as_str()),
        ("SEGNODE_NODE__NAME", name),
        (
            "SEGNODE_WORKERS__ENABLED",
            if workers { "true" } else { "false" },
        ),
        ("SEGNODE_COMPLETION__SETTLE_S", "0.5"),
        ("SEGNODE_WORKERS__POLL_MS", "5000"),
    ];
    env.extend_from_slice(extra_env);
    NodeProc::start_with(&env, toml)
}

/// Another process on the same database and storage, with its own node name (and, for a receiver,
/// its own port).
fn peer_process(of: &NodeProc, role: &str, name: &str) -> NodeProc {
    let mut p = of.sibling(role);
    p.env.retain(|(k, _)| k != "SEGNODE_NODE__NAME");
    p.env.push(("SEGNODE_NODE__NAME".into(), name.into()));
    if role == "serve" {
        p.port = free_port();
        p.env.retain(|(k, _)| k != "SEGNODE_DICOM__PORT");
        p.env
            .push(("SEGNODE_DICOM__PORT".into(), p.port.to_string()));
    }
    p.spawn();
    p
}

/// The worker that ran a job, from its result (`<node name>/<pid>/<pipeline>#<slot>/<id>`).
fn worker_of(job: &Value) -> String {
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap_or("{}")).unwrap();
    result["worker"]
        .as_str()
        .and_then(|w| w.split('/').next())
        .unwrap_or("")
        .to_string()
}

fn instance_number(path: &Path) -> i64 {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .expect("open file");
    obj.element(dicom_dictionary_std::tags::INSTANCE_NUMBER)
        .ok()
        .and_then(|e| e.to_int::<i64>().ok())
        .expect("InstanceNumber")
}

#[test]
fn forty_series_two_workers_each_segmented_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    // 40 small chest phantoms, each its own study and series
    let series: Vec<Vec<PathBuf>> = (0..40)
        .map(|i| {
            let dir = data.path().join(format!("s{i}"));
            let seed = (100 + i).to_string();
            phantom_with(
                &dir,
                &data.path().join(format!("t{i}")),
                20,
                96,
                &["--seed", &seed],
            );
            files_under(&dir)
        })
        .collect();
    let orthanc = OrthancProc::start();
    let rx = receiver(
        "receiver-1",
        false,
        &[],
        &format!("{}{LUNG_RULE}", destination_toml(orthanc.dicom_port)),
    );
    let w1 = peer_process(&rx, "worker", "worker-1");
    let w2 = peer_process(&rx, "worker", "worker-2");
    // four senders at once, ten series each, one association per series
    std::thread::scope(|s| {
        for chunk in series.chunks(10) {
            let port = rx.port;
            s.spawn(move || {
                for files in chunk {
                    let out = storescu(port, files, &[]);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
    rx.wait_complete(40, Duration::from_secs(180));
    let jobs = wait_for("40 jobs done", Duration::from_secs(300), || {
        let jobs = rx.jobs();
        (jobs.len() == 40 && jobs.iter().all(|j| j["state"] == "DONE")).then_some(jobs)
    });
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    let mut per_series: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        assert_eq!(j["attempts"], 1, "a job ran more than once: {j:#?}");
        *per_worker.entry(worker_of(j)).or_default() += 1;
        *per_series
            .entry(j["series_uid"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_series.len(), 40, "one job per series");
    // no job was started twice: each series' history has one start and one finish
    for uid in per_series.keys() {
        let h = rx.history(uid);
        let started = h
            .iter()
            .filter(|e| e.starts_with("job lung started"))
            .count();
        let done = h.iter().filter(|e| e.contains(" done in ")).count();
        assert_eq!((started, done), (1, 1), "{uid}: {h:#?}");
    }
    let items = wait_for("40 deliveries", Duration::from_secs(120), || {
        let items = rx.outbox();
        (items.len() == 40 && items.iter().all(|d| d["state"] == "SENT")).then_some(items)
    });
    let seg_uids: HashSet<&str> = items
        .iter()
        .map(|d| d["sop_instance_uid"].as_str().unwrap())
        .collect();
    assert_eq!(seg_uids.len(), 40);
    assert_eq!(
        orthanc.series_of_modality("SEG").len(),
        40,
        "40 SEGs in the PACS"
    );
    eprintln!("jobs per worker: {per_worker:?}");
    assert_eq!(
        per_worker.keys().len(),
        2,
        "both workers did work: {per_worker:?}"
    );
    assert!(per_worker.contains_key("worker-1") && per_worker.contains_key("worker-2"));
    drop((w1, w2));
}

#[test]
fn worker_killed_mid_job_the_other_worker_completes_it() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("chest");
    phantom(&dir, &data.path().join("truth"), 40, 128);
    let files = files_under(&dir);
    let orthanc = OrthancProc::start();
    let model = format!(
        "[pipelines.external.slow]\ncommand = [\"{}\", \"{}\", \"{{input}}\", \"{{output}}\", \"--mode\", \"slow\", \"--sleep\", \"6\"]\ntimeout_s = 120\n",
        python().display(),
        py_script("test_model.py").display()
    );
    let toml = format!(
        "{}{model}[[rules]]\nname = \"slow\"\npipelines = [\"external:slow\"]\ndestinations = [\"pacs\"]\n",
        destination_toml(orthanc.dicom_port)
    );
    let rx = receiver(
        "receiver-1",
        false,
        &[
            ("SEGNODE_WORKERS__LEASE_S", "2"),
            ("SEGNODE_WORKERS__POLL_MS", "200"),
        ],
        &toml,
    );
    let mut workers = HashMap::from([
        (
            "worker-1".to_string(),
            peer_process(&rx, "worker", "worker-1"),
        ),
        (
            "worker-2".to_string(),
            peer_process(&rx, "worker", "worker-2"),
        ),
    ]);
    assert!(storescu(rx.port, &files, &[]).status.success());
    let running = wait_for("the job running", Duration::from_secs(60), || {
        rx.jobs().into_iter().find(|j| j["state"] == "RUNNING")
    });
    let owner = running["lease_owner"].as_str().unwrap().to_string();
    let first = owner.split('/').next().unwrap().to_string();
    let other = if first == "worker-1" {
        "worker-2"
    } else {
        "worker-1"
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(workers.get_mut(&first).unwrap().signal("-9"), None);
    let job = wait_for("the job done", Duration::from_secs(120), || {
        rx.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    assert_eq!(job["attempts"], 2, "{job:#?}");
    assert_eq!(worker_of(&job), other, "completed by the surviving worker");
    let item = wait_for("the delivery", Duration::from_secs(60), || {
        rx.outbox().into_iter().find(|d| d["state"] == "SENT")
    });
    assert_eq!(item["job_id"], job["id"]);
    assert_eq!(rx.outbox().len(), 1, "one result, delivered once");
    assert_eq!(orthanc.series_of_modality("SEG").len(), 1);
    let done: Vec<String> = rx
        .history(job["series_uid"].as_str().unwrap())
        .into_iter()
        .filter(|e| e.contains(" done in "))
        .collect();
    assert_eq!(done.len(), 1, "{done:#?}");
}

#[test]
fn one_series_over_two_receivers_completes_once_when_both_are_done() {
    let data = tempfile::tempdir().unwrap();
    let (mut files, uid) = gen_series(data.path(), 40, 64, 11, &[]);
    files.sort_by_key(|f| instance_number(f));
    let rule = "[[rules]]\nname = \"all\"\npipelines = [\"noop\"]\ndestinations = []\n";
    let r1 = receiver("receiver-1", true, &[], rule);
    let r2 = peer_process(&r1, "serve", "receiver-2");
    // even slices fast to receiver 1; odd slices slowly (4 s, far longer than the settle time) to
    // receiver 2: receiver 1's tracker must wait for receiver 2's association
    let even: Vec<PathBuf> = files.iter().step_by(2).cloned().collect();
    let odd: Vec<PathBuf> = files.iter().skip(1).step_by(2).cloned().collect();
    let slow_log = data.path().join("slow.jsonl");
    let mut slow = pynetdicom_send(r2.port, &odd, 0.2, &slow_log);
    wait_for(
        "the slow sender's first instance",
        Duration::from_secs(60),
        || (!acknowledged(&slow_log).is_empty()).then_some(()),
    );
    assert!(storescu(r1.port, &even, &[]).status.success());
    // receiver 1's part is a contiguous stack on its own (double spacing) and released, yet the
    // series stays open while receiver 2 is receiving
    std::thread::sleep(Duration::from_millis(1500));
    let s = r1.series();
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0]["state"], "RECEIVING",
        "completed while receiver 2 was receiving: {s:#?}"
    );
    assert!(wait_child(&mut slow, Duration::from_secs(60)));
    assert_eq!(acknowledged(&slow_log).len(), odd.len());
    let s = r2.wait_complete(1, Duration::from_secs(60));
    assert_eq!(s[0]["instance_count"], 40);
    assert_eq!(s[0]["revision"], 1);
    let h = r1.history(&uid);
    assert_eq!(
        h.iter().filter(|e| e.starts_with("complete ")).count(),
        1,
        "{h:#?}"
    );
    let jobs = wait_for("the job done", Duration::from_secs(60), || {
        let j = r1.jobs();
        (j.len() == 1 && j[0]["state"] == "DONE").then_some(j)
    });
    assert_eq!(jobs[0]["attempts"], 1);
    assert_eq!(
        h.iter().filter(|e| e.starts_with("routed ")).count(),
        1,
        "{h:#?}"
    );
}

#[test]
fn receiver_restarted_mid_stream_loses_nothing_and_the_series_completes() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(data.path(), 120, 256, 21, &[]);
    let rule = "[[rules]]\nname = \"all\"\npipelines = [\"noop\"]\ndestinations = []\n";
    let mut r1 = receiver("receiver-1", false, &[], rule);
    let r2 = peer_process(&r1, "serve", "receiver-2");
    let log = data.path().join("sent.jsonl");
    let mut sender = pynetdicom_send(r1.port, &files, 0.01, &log);
    wait_for("40 instances stored", Duration::from_secs(60), || {
        (acknowledged(&log).len() >= 40).then_some(())
    });
    assert_eq!(r1.signal("-9"), None, "killed mid-stream");
    let _ = wait_child(&mut sender, Duration::from_secs(60));
    let acked = acknowledged(&log);
    assert!(
        acked.len() >= 40 && acked.len() < files.len(),
        "{} acknowledged",
        acked.len()
    );
    // the other receiver carries on meanwhile; receiver 1 comes back under its name
    r1.spawn();
    // the sender sends the rest (the node may also have the instance that was in flight)
    let rest = check_acknowledged_then_rest(&files, &acked, &indexed_sops(&r2, &uid));
    assert!(storescu(r1.port, &rest, &[]).status.success());
    let s = r2.wait_complete(1, Duration::from_secs(60));
    assert_eq!(s[0]["instance_count"], files.len() as i64);
    assert_eq!(s[0]["revision"], 1, "{s:#?}");
    let show = r1.series_show(&uid);
    for i in show["instances"].as_array().unwrap() {
        let p = r1.store_dir().join(i["path"].as_str().unwrap());
        assert!(p.is_file(), "{} missing", p.display());
    }
    let h = r1.history(&uid);
    assert_eq!(
        h.iter().filter(|e| e.starts_with("complete ")).count(),
        1,
        "{h:#?}"
    );
    assert!(
        r1.log()
            .contains("associations left open by a previous run marked aborted"),
        "the restarted receiver closed its own orphaned association"
    );
    wait_for("one job", Duration::from_secs(60), || {
        let j = r1.jobs();
        (j.len() == 1).then_some(())
    });
}

#[test]
fn database_restart_turns_senders_away_and_everything_resumes() {
    let pg = PgServer::private();
    let data = tempfile::tempdir().unwrap();
    // in file-name order, not slice order: what arrives before the outage has gaps, so the series
    // cannot complete on release evidence before the rest is sent
    let (files, uid) = gen_series(data.path(), 30, 64, 41, &[]);
    let url = pg.database();
    let rule = "[[rules]]\nname = \"all\"\npipelines = [\"noop\"]\ndestinations = []\n";
    let http = free_port().to_string();
    let env = [
        ("SEGNODE_DATABASE__URL", url.as_str()),
        ("SEGNODE_NODE__NAME", "receiver-1"),
        ("SEGNODE_COMPLETION__SETTLE_S", "0.5"),
        ("SEGNODE_HTTP__PORT", http.as_str()),
    ];
    let http: u16 = http.parse().unwrap();
    let node = NodeProc::start_with(&env, rule);
    let log = data.path().join("sent.jsonl");
    let mut sender = pynetdicom_send(node.port, &files, 0.25, &log);
    wait_for("8 instances stored", Duration::from_secs(60), || {
        (acknowledged(&log).len() >= 8).then_some(())
    });
    pg.stop();
    // the association in progress: what arrives now is refused with Out of Resources, not acknowledged
    wait_child(&mut sender, Duration::from_secs(120));
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let refused = lines.iter().filter(|l| l["status"] == 0xA700).count();
    let acked = acknowledged(&log);
    assert!(refused >= 1, "{lines:#?}");
    assert_eq!(
        acked.len() + refused,
        lines.len(),
        "every response is a success or A700: {lines:#?}"
    );
    // a new association while the database is away: A-ASSOCIATE-RJ, transient
    let out = echoscu(node.port, "ECHOSCU", "SEGNODE");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("Transient") && text.contains("Congestion"),
        "{text}"
    );
    assert_eq!(
        http_get(http, "/health").0,
        503,
        "health while the database is away"
    );
    let (_, metrics) = http_get(http, "/metrics");
    assert!(
        metrics.contains("segnode_index_up{node=\"receiver-1\"} 0")
            && metrics.contains("reason=\"index_unavailable\"} 1"),
        "{metrics}"
    );
    pg.start();
    wait_for("the node to accept again", Duration::from_secs(60), || {
        echoscu(node.port, "ECHOSCU", "SEGNODE")
            .status
            .success()
            .then_some(())
    });
    // every acknowledged instance is indexed; the sender sends what was refused
    let rest = check_acknowledged_then_rest(&files, &acked, &indexed_sops(&node, &uid));
    assert!(storescu(node.port, &rest, &[]).status.success());
    // completion on release evidence (the first association's end was recorded once the database was
    // back), routing and the worker's wake-up all resume
    let s = node.wait_complete(1, Duration::from_secs(30));
    assert_eq!(s[0]["instance_count"], 30);
    assert!(
        s[0]["completion_reason"]
            .as_str()
            .unwrap()
            .contains("association released"),
        "{s:#?}"
    );
    assert_eq!(s[0]["revision"], 1, "{s:#?}");
    assert_eq!(http_get(http, "/health"), (200, "ok\n".to_string()));
    wait_for("the job done", Duration::from_secs(30), || {
        let j = node.jobs();
        (j.len() == 1 && j[0]["state"] == "DONE").then_some(())
    });
}

#[test]
fn workers_restricted_to_pipelines_take_only_their_jobs() {
    let data = tempfile::tempdir().unwrap();
    let rule = "[[rules]]\nname = \"chest\"\npipelines = [\"lung\", \"noop\"]\ndestinations = []\n[rules.match]\nmodality = [\"CT\"]\n";
    let rx = receiver(
        "receiver-1",
        false,
        &[("SEGNODE_WORKERS__POLL_MS", "500")],
        rule,
    );
    // a "GPU" worker for one pipeline, a "CPU" worker for the other (the list from the environment)
    let mut gpu = rx.sibling("worker");
    gpu.env
        .push(("SEGNODE_NODE__NAME".into(), "worker-gpu".into()));
    gpu.env
        .push(("SEGNODE_WORKERS__PIPELINES".into(), "noop".into()));
    gpu.spawn();
    let mut cpu = rx.sibling("worker");
    cpu.env
        .push(("SEGNODE_NODE__NAME".into(), "worker-cpu".into()));
    cpu.env
        .push(("SEGNODE_WORKERS__PIPELINES".into(), "lung,cochlear".into()));
    cpu.spawn();
    for i in 0..3 {
        let dir = data.path().join(format!("s{i}"));
        let seed = (300 + i).to_string();
        phantom_with(
            &dir,
            &data.path().join(format!("t{i}")),
            20,
            64,
            &["--seed", &seed],
        );
        assert!(storescu(rx.port, &files_under(&dir), &[]).status.success());
    }
    let jobs = wait_for("6 jobs done", Duration::from_secs(120), || {
        let j = rx.jobs();
        (j.len() == 6 && j.iter().all(|j| j["state"] == "DONE")).then_some(j)
    });
    for j in &jobs {
        let expected = if j["pipeline"] == "noop" {
            "worker-gpu"
        } else {
            "worker-cpu"
        };
        assert_eq!(worker_of(j), expected, "{j:#?}");
    }
}
