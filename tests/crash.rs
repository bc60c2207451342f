//! A crash at each step of filing an instance (tests/README: `SEGNODE_TEST_CRASH_AT` aborts the process
//! there, like a power cut for segnode's own state): the sender never got a success for it, and after
//! the node starts again store and index agree — every file has its row, every row its file — and the
//! sender's retry is filed exactly once (a recovered file counts as the same instance, not a replacement).
//! Also the other direction: an index row whose file was removed while the node was down.
//!
//! The ingest journal (`storage.journal`, on by default) acknowledges an instance once its journal
//! record is durable and files it after: a crash between journal and file, between file and index, in
//! the middle of a batch of several, after the index but before the checkpoint, and during the replay at
//! the next start loses no acknowledged instance, leaves no partial file in the store and no duplicate
//! row; a materialiser that lags does not let a series split over two associations complete early.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use support::node::*;

/// SOP Instance UIDs of the instance files in the node's store (file names are `<SOP UID>.dcm`).
fn stored_sops(node: &NodeProc) -> HashSet<String> {
    node.stored_files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// SOP Instance UIDs the index lists, over every series.
fn indexed(node: &NodeProc) -> HashSet<String> {
    node.series()
        .iter()
        .flat_map(|s| indexed_sops(node, s["series_uid"].as_str().expect("series_uid")))
        .collect()
}

/// Send `files` with pynetdicom; the files acknowledged with a success status.
fn send(node: &NodeProc, files: &[PathBuf], tag: &str) -> Vec<PathBuf> {
    let log = node.dir.path().join(format!("sender-{tag}.jsonl"));
    let mut child = pynetdicom_send(node.port, files, 0.0, &log);
    wait_child(&mut child, Duration::from_secs(60));
    acknowledged(&log)
}

#[test]
fn a_crash_at_each_filing_step_loses_nothing_and_leaves_store_and_index_agreeing() {
    let data = tempfile::tempdir().unwrap();
    let (files, series_uid) = gen_series(&data.path().join("ct"), 3, 64, 31, &[]);
    let sop = sop_uid_of(&files[2]);
    // (step, is the crashed instance's file in the store when the node comes back?)
    for (step, file_kept) in [
        ("synced", false),
        ("renamed", true),
        ("published", true),
        ("indexed", true),
    ] {
        // the direct filing path (the journal's steps are below)
        let mut node = NodeProc::start(&[("SEGNODE_STORAGE__JOURNAL", "false")]);
        // two instances filed normally first: they must survive the crash untouched
        let acked = send(&node, &files[..2], "before");
        assert_eq!(acked.len(), 2, "{step}: {}", node.log());
        node.signal("-TERM");
        node.env.push(("SEGNODE_TEST_CRASH_AT".into(), step.into()));
        node.spawn();
        let acked = send(&node, &files[2..], "crash");
        assert!(
            acked.is_empty(),
            "{step}: acknowledged before it was durable"
        );
        let status = node.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{step}: the node should have aborted");
        assert!(
            node.log()
                .contains(&format!("SEGNODE_TEST_CRASH_AT={step}")),
            "{step}: {}",
            node.log()
        );

        node.env.retain(|(k, _)| k != "SEGNODE_TEST_CRASH_AT");
        node.spawn();
        let on_disk = stored_sops(&node);
        let in_index = indexed(&node);
        assert_eq!(on_disk, in_index, "{step}: store and index disagree");
        assert_eq!(on_disk.contains(&sop), file_kept, "{step}: {on_disk:?}");
        for f in &files[..2] {
            assert!(
                on_disk.contains(&sop_uid_of(f)),
                "{step}: lost an acknowledged instance"
            );
        }

        // the sender retries what was not acknowledged: filed once, as the same instance
        let acked = send(&node, &files[2..], "retry");
        assert_eq!(acked.len(), 1, "{step}: {}", node.log());
        let on_disk = stored_sops(&node);
        assert_eq!(on_disk.len(), 3, "{step}");
        assert_eq!(on_disk, indexed(&node), "{step}: store and index disagree");
        let history = node.history(&series_uid);
        assert!(
            !history.iter().any(|h| h.starts_with("replaced")),
            "{step}: the retry of a recovered file is the same instance: {history:?}"
        );
    }
}

#[test]
fn an_index_row_whose_file_was_removed_is_taken_out_at_start() {
    let data = tempfile::tempdir().unwrap();
    let (files, series_uid) = gen_series(&data.path().join("ct"), 3, 64, 32, &[]);
    let mut node = NodeProc::start(&[]);
    assert_eq!(send(&node, &files, "all").len(), 3, "{}", node.log());
    node.signal("-TERM");
    let gone = node
        .stored_files()
        .into_iter()
        .find(|p| p.file_stem().unwrap().to_string_lossy() == sop_uid_of(&files[1]))
        .expect("stored file");
    std::fs::remove_file(&gone).unwrap();
    node.spawn();
    let in_index = indexed(&node);
    assert_eq!(in_index, stored_sops(&node));
    assert_eq!(in_index.len(), 2);
    let history = node.history(&series_uid);
    assert!(
        history.iter().any(|h| h.starts_with("file missing")),
        "{history:?}"
    );
}

/// Store and index agree, every acknowledged instance is there with the data set that was sent (no
/// partial file), each SOP instance has one row and the series' count matches its rows.
fn check_consistent(node: &NodeProc, files: &[PathBuf], acked: &[PathBuf], what: &str) {
    let on_disk = stored_sops(node);
    let in_index = indexed(node);
    assert_eq!(
        on_disk,
        in_index,
        "{what}: store and index disagree\n{}",
        node.log()
    );
    for f in acked {
        assert!(
            on_disk.contains(&sop_uid_of(f)),
            "{what}: acknowledged {} lost\n{}",
            f.display(),
            node.log()
        );
    }
    for p in node.stored_files() {
        let sop = p.file_stem().unwrap().to_string_lossy().into_owned();
        let sent = files
            .iter()
            .find(|f| sop_uid_of(f) == sop)
            .expect("a stored file that was sent");
        assert!(
            dataset_bytes(&p) == dataset_bytes(sent),
            "{what}: partial or different file {}",
            p.display()
        );
    }
    for s in node.series() {
        let uid = s["series_uid"].as_str().expect("series_uid");
        let rows = node.series_show(uid)["instances"]
            .as_array()
            .expect("instances")
            .len();
        assert_eq!(
            s["instance_count"].as_u64(),
            Some(rows as u64),
            "{what}: series count and rows differ"
        );
    }
}

#[test]
fn a_crash_at_each_journal_step_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let (files, series_uid) = gen_series(&data.path().join("ct"), 8, 64, 33, &[]);
    // (step, materialiser batch held to this many records)
    for (step, hold) in [
        ("journaled", None),
        ("mid-batch", Some("3")),
        ("placed", None),
        ("placed", Some("3")),
        ("batch-indexed", Some("2")),
    ] {
        let what = format!("{step} (batches of {})", hold.unwrap_or("1+"));
        let mut node = NodeProc::start(&[]);
        let before = send(&node, &files[..2], "before");
        assert_eq!(before.len(), 2, "{what}: {}", node.log());
        node.signal("-TERM");
        node.env.push(("SEGNODE_TEST_CRASH_AT".into(), step.into()));
        if let Some(n) = hold {
            node.env
                .push(("SEGNODE_TEST_MATERIALISE_HOLD".into(), n.into()));
        }
        node.spawn();
        let acked = send(&node, &files[2..], "crash");
        let status = node.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{what}: the node should have aborted");
        assert!(
            node.log()
                .contains(&format!("SEGNODE_TEST_CRASH_AT={step}")),
            "{what}: {}",
            node.log()
        );
        if step == "journaled" {
            assert!(acked.is_empty(), "{what}: acknowledged before the response");
        } else {
            assert!(!acked.is_empty(), "{what}: the crash is after the response");
        }

        node.env.retain(|(k, _)| !k.starts_with("SEGNODE_TEST_"));
        node.spawn();
        let acked: Vec<PathBuf> = before.iter().chain(&acked).cloned().collect();
        check_consistent(&node, &files, &acked, &what);
        if step == "journaled" {
            // durable in the journal, never acknowledged: filed at the start all the same
            assert!(
                stored_sops(&node).contains(&sop_uid_of(&files[2])),
                "{what}"
            );
        }
        assert!(
            node.incoming_files().is_empty(),
            "{what}: temporary files left: {:?}",
            node.incoming_files()
        );

        // the sender retries what was not acknowledged: each instance filed once
        let rest: Vec<PathBuf> = files
            .iter()
            .filter(|f| !acked.contains(f))
            .cloned()
            .collect();
        let retried = send(&node, &rest, "retry");
        assert_eq!(retried.len(), rest.len(), "{what}: {}", node.log());
        node.signal("-TERM");
        node.spawn();
        check_consistent(&node, &files, &files, &what);
        assert_eq!(stored_sops(&node).len(), files.len(), "{what}");
        let history = node.history(&series_uid);
        assert!(
            !history.iter().any(|h| h.starts_with("replaced")),
            "{what}: a replayed or retried instance is the same instance: {history:?}"
        );
    }
}

#[test]
fn a_crash_while_replaying_the_journal_is_replayed_again() {
    let data = tempfile::tempdir().unwrap();
    let (files, _) = gen_series(&data.path().join("ct"), 5, 64, 34, &[]);
    let mut node = NodeProc::prepare(&[], "");
    // four acknowledged instances wait in the journal when the node dies before filing them
    node.env
        .push(("SEGNODE_TEST_CRASH_AT".into(), "placed".into()));
    node.env
        .push(("SEGNODE_TEST_MATERIALISE_HOLD".into(), "4".into()));
    node.spawn();
    let acked = send(&node, &files, "crash");
    node.wait_exit(Duration::from_secs(30));
    assert!(acked.len() >= 4, "{}", node.log());
    // the next start dies in the middle of replaying them
    node.env.retain(|(k, _)| !k.starts_with("SEGNODE_TEST_"));
    node.env
        .push(("SEGNODE_TEST_CRASH_AT".into(), "replaying".into()));
    node.spawn_process();
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{}", node.log());
    assert!(node.log().contains("SEGNODE_TEST_CRASH_AT=replaying"));
    // and the one after replays them again, completely
    node.env.retain(|(k, _)| !k.starts_with("SEGNODE_TEST_"));
    node.spawn();
    check_consistent(&node, &files, &acked, "after the replay");
    assert!(
        node.log().contains("ingest journal read back"),
        "{}",
        node.log()
    );
}

#[test]
fn a_lagging_journal_does_not_complete_a_split_series_early() {
    let data = tempfile::tempdir().unwrap();
    let (files, uid) = gen_series(&data.path().join("ct"), 24, 64, 35, &[]);
    // the materialiser waits up to 5 s for 1000 records before each batch: acknowledged instances
    // stay in the journal well past the release and the settle time
    let node = NodeProc::start(&[
        ("SEGNODE_COMPLETION__SETTLE_CALLERS", "STORESCU"),
        ("SEGNODE_COMPLETION__SETTLE_S", "1"),
        ("SEGNODE_TEST_MATERIALISE_HOLD", "1000"),
    ]);
    let (a, b) = files.split_at(12);
    assert!(storescu(node.port, a, &[]).status.success());
    assert!(storescu(node.port, b, &[]).status.success());
    let series = node.wait_complete(1, Duration::from_secs(60));
    assert_eq!(series[0]["instance_count"], 24, "{}", node.log());
    let history = node.history(&uid);
    assert_eq!(
        history.iter().filter(|h| h.starts_with("complete")).count(),
        1,
        "{history:?}"
    );
    assert_eq!(series[0]["revision"], 1, "{history:?}");
    check_consistent(&node, &files, &files, "lagging journal");
}
