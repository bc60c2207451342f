//! Issue 15, part 1: retention. Finished series leave the disk after `storage.keep_hours` (files gone,
//! history kept, state PURGED); a series with a delivery pending or a job waiting for a retry stays; the
//! watermark purges finished series oldest first whatever their age; a late instance of a purged series
//! opens a new revision; `segnode series purge` refuses a series in use; of two index clients racing for
//! one series exactly one purges it (SQLite here, PostgreSQL with SEGNODE_TEST_DB=postgres).

mod support;

use segnode_db::retention::PurgeTarget;
use segnode_db::Index;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::node::{phantom_with, storescu, NodeProc};
use support::*;

fn series_files(node: &NodeProc, series_uid: &str) -> Vec<PathBuf> {
    node.stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(series_uid))
        .collect()
}

fn state_of(node: &NodeProc, uid: &str) -> String {
    node.series()
        .into_iter()
        .find(|s| s["series_uid"] == uid)
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn chest(dir: &Path, seed: &str) -> (Vec<PathBuf>, String) {
    chest_sized(dir, seed, 12, 64)
}

fn chest_sized(dir: &Path, seed: &str, slices: usize, matrix: usize) -> (Vec<PathBuf>, String) {
    phantom_with(
        dir,
        &dir.with_extension("truth"),
        slices,
        matrix,
        &["--seed", seed],
    );
    let files = files_under(dir);
    let uid = series_uid_of(&files[0]);
    (files, uid)
}

fn series_uid_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("file");
    let e = obj
        .element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
        .expect("SeriesInstanceUID");
    e.to_str()
        .unwrap()
        .trim_end_matches('\0')
        .trim()
        .to_string()
}

#[test]
fn finished_series_leave_the_disk_and_busy_ones_stay() {
    let data = tempfile::tempdir().unwrap();
    let (plain, plain_uid) = chest(&data.path().join("plain"), "21");
    let (busy, busy_uid) = chest_sized(&data.path().join("busy"), "22", 16, 128);
    // "busy" goes to a destination that is down: its delivery stays pending
    let dead_port = free_port();
    let env = [
        ("SEGNODE_STORAGE__KEEP_HOURS", "0.0005"), // 1.8 s
        ("SEGNODE_STORAGE__PURGE_INTERVAL_S", "0.5"),
        ("SEGNODE_DISPATCH__RETRY_BASE_S", "600"),
    ];
    let node = NodeProc::start_with(
        &env,
        &format!(
            "[[destinations]]\nname = \"down\"\nae_title = \"DOWN\"\nhost = \"127.0.0.1\"\nport = {dead_port}\n\
             [[rules]]\nname = \"busy\"\npipelines = [\"lung\"]\ndestinations = [\"down\"]\n\
             [rules.match]\nmin_slices = 16\n"
        ),
    );
    // the plain series: 12 slices, no rule matches; the busy one: 16 slices, segmented, delivery pending
    assert!(storescu(node.port, &plain, &[]).status.success());
    assert!(storescu(node.port, &busy, &[]).status.success());
    wait_for("the plain series PURGED", Duration::from_secs(60), || {
        (state_of(&node, &plain_uid) == "PURGED").then_some(())
    });
    assert!(
        series_files(&node, &plain_uid).is_empty(),
        "files of a purged series remain"
    );
    let history = node.history(&plain_uid);
    assert!(
        history
            .iter()
            .any(|e| e.contains("retention: finished more than")),
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .any(|e| e.contains("files removed: 12 instances")),
        "{history:#?}"
    );
    // the busy one: job done, delivery pending -> kept well past the window
    wait_for(
        "the busy series' job done",
        Duration::from_secs(120),
        || {
            node.jobs()
                .into_iter()
                .find(|j| j["series_uid"] == busy_uid.as_str() && j["state"] == "DONE")
        },
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(state_of(&node, &busy_uid), "COMPLETE");
    assert_eq!(series_files(&node, &busy_uid).len(), busy.len());
    // by hand: refused while the delivery is pending
    let out = node.cli(&["series", "purge", &busy_uid]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be purged now"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // an instance of the purged series sent again opens a new revision and is stored
    assert!(storescu(node.port, &plain[..1], &[]).status.success());
    wait_for("the new revision", Duration::from_secs(30), || {
        node.series()
            .into_iter()
            .find(|s| s["series_uid"] == plain_uid.as_str() && s["revision"].as_i64() == Some(2))
    });
    assert_eq!(series_files(&node, &plain_uid).len(), 1);
}

#[test]
fn the_watermark_purges_finished_series_oldest_first_whatever_their_age() {
    let data = tempfile::tempdir().unwrap();
    let (a, a_uid) = chest(&data.path().join("a"), "31");
    let (b, b_uid) = chest(&data.path().join("b"), "32");
    // keep forever by age, but the disk is "full": any real disk is more than 0.2 % used
    let node = NodeProc::start(&[
        ("SEGNODE_STORAGE__KEEP_HOURS", "0"),
        ("SEGNODE_STORAGE__PURGE_ABOVE_PERCENT", "0.2"),
        ("SEGNODE_STORAGE__PURGE_BELOW_PERCENT", "0.1"),
        ("SEGNODE_STORAGE__PURGE_INTERVAL_S", "2"),
    ]);
    assert!(storescu(node.port, &a, &[]).status.success());
    wait_for("a complete", Duration::from_secs(30), || {
        (state_of(&node, &a_uid) != "RECEIVING" && !state_of(&node, &a_uid).is_empty())
            .then_some(())
    });
    assert!(storescu(node.port, &b, &[]).status.success());
    wait_for("both purged", Duration::from_secs(60), || {
        (state_of(&node, &a_uid) == "PURGED" && state_of(&node, &b_uid) == "PURGED").then_some(())
    });
    let at = |uid: &str| -> i64 {
        node.series_show(uid)["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["detail"].as_str().unwrap_or("").starts_with("watermark"))
            .and_then(|e| e["at_ms"].as_i64())
            .expect("a watermark purge event")
    };
    assert!(at(&a_uid) <= at(&b_uid), "the older series goes first");
    assert!(node.stored_files().is_empty());
}

#[test]
fn two_clients_racing_for_one_series_purge_it_once() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = chest(&data.path().join("c"), "41");
    let mut node = NodeProc::start(&[("SEGNODE_STORAGE__KEEP_HOURS", "0")]);
    assert!(storescu(node.port, &files, &[]).status.success());
    let s: Value = wait_for("complete and routed", Duration::from_secs(30), || {
        let s = node.series_show(&uid);
        s["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("stored, not processed")
            })
            .then_some(s)
    });
    let revision = s["series"]["revision"].as_i64().unwrap();
    let url = node
        .env
        .iter()
        .find(|(k, _)| k == "SEGNODE_DATABASE__URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    node.signal("-TERM");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wins = rt.block_on(async {
        let (a, b) = (
            Index::open(&url).await.unwrap(),
            Index::open(&url).await.unwrap(),
        );
        let t = PurgeTarget {
            series_uid: uid.clone(),
            revision,
        };
        let (x, y) = tokio::join!(a.claim_purge(&t, "race a"), b.claim_purge(&t, "race b"));
        [x.unwrap(), y.unwrap()]
    });
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
}

#[test]
fn a_series_whose_job_may_still_run_or_that_is_still_receiving_stays() {
    let data = tempfile::tempdir().unwrap();
    let (failing, failing_uid) = chest(&data.path().join("failing"), "71");
    let (slow, slow_uid) = chest(&data.path().join("slow"), "72");
    let model = format!(
        "[pipelines.external.broken]\ncommand = [\"{}\", \"{}\", \"{{input}}\", \"{{output}}\", \"--mode\", \"garbage\"]\ntimeout_s = 60\n",
        python().display(),
        py_script("test_model.py").display()
    );
    let node = NodeProc::start_with(
        &[
            ("SEGNODE_STORAGE__KEEP_HOURS", "0.0005"),
            ("SEGNODE_STORAGE__PURGE_INTERVAL_S", "0.5"),
            ("SEGNODE_WORKERS__RETRY_BASE_S", "600"),
            ("SEGNODE_WORKERS__RETRY_MAX_S", "600"),
        ],
        &format!(
            "{model}[[rules]]\nname = \"model\"\npipelines = [\"external:broken\"]\ndestinations = []\n"
        ),
    );
    // a job that failed and waits for its retry: the series stays
    assert!(storescu(node.port, &failing, &[]).status.success());
    wait_for(
        "the job FAILED (retry pending)",
        Duration::from_secs(120),
        || {
            node.jobs()
                .into_iter()
                .find(|j| j["series_uid"] == failing_uid.as_str() && j["state"] == "FAILED")
        },
    );
    // a series still receiving: a slow sender mid-association
    let log = data.path().join("slow.jsonl");
    let mut child = support::node::pynetdicom_send(node.port, &slow, 0.5, &log);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(state_of(&node, &slow_uid), "RECEIVING");
    assert!(!series_files(&node, &slow_uid).is_empty());
    // well past the window for the failed one
    assert_eq!(state_of(&node, &failing_uid), "COMPLETE");
    assert_eq!(series_files(&node, &failing_uid).len(), failing.len());
    assert!(support::node::wait_child(
        &mut child,
        Duration::from_secs(60)
    ));
    assert_eq!(support::node::acknowledged(&log).len(), slow.len());
}
