//! A crash at each step of filing an instance (tests/README: `SEGNODE_TEST_CRASH_AT` aborts the process
//! there, like a power cut for segnode's own state): the sender never got a success for it, and after
//! the node starts again store and index agree — every file has its row, every row its file — and the
//! sender's retry is filed exactly once (a recovered file counts as the same instance, not a replacement).
//! Also the other direction: an index row whose file was removed while the node was down.

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
        let mut node = NodeProc::start(&[]);
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
