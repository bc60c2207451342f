//! Issue 15, part 6: an index database made by the previous release (schema version 5, the fixture
//! `tests/fixtures/index-v5.sql`) opens under today's segnode: it is migrated in place, its series, jobs,
//! deliveries and history read back as they were, and new series are filed beside them.

mod support;

use std::time::Duration;
use support::node::{phantom_with, storescu, NodeProc};
use support::*;

#[test]
fn yesterdays_index_is_migrated_and_reads_back() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("old.db");
    let load = std::process::Command::new(python())
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(open(sys.argv[2]).read()); c.close()")
        .arg(&db)
        .arg(repo_root().join("tests/fixtures/index-v5.sql"))
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let url = format!("sqlite://{}", db.display());
    let node = NodeProc::start(&[
        ("SEGNODE_DATABASE__URL", url.as_str()),
        ("SEGNODE_STORAGE__KEEP_HOURS", "0"),
    ]);
    assert!(
        node.log().contains("index schema migrated"),
        "{}",
        node.log()
    );
    let series = node.series();
    let state = |uid: &str| {
        series
            .iter()
            .find(|s| s["series_uid"] == uid)
            .map(|s| s["state"].clone())
    };
    assert_eq!(state("2.25.1111"), Some("COMPLETE".into()), "{series:#?}");
    assert_eq!(state("2.25.2222"), Some("COMPLETE".into()));
    let jobs = node.jobs();
    assert!(
        jobs.iter()
            .any(|j| j["id"] == "job-1" && j["state"] == "DONE"),
        "{jobs:#?}"
    );
    let outbox = node.outbox();
    assert!(
        outbox
            .iter()
            .any(|d| d["id"] == "del-1" && d["state"] == "SENT"),
        "{outbox:#?}"
    );
    let history = node.history("2.25.1111");
    assert!(
        history
            .iter()
            .any(|e| e.contains("delivered 2.25.7777 to pacs")),
        "{history:#?}"
    );
    // and the migrated database takes new work
    let dir = data.path().join("new");
    phantom_with(
        &dir,
        &dir.with_extension("truth"),
        12,
        64,
        &["--seed", "51"],
    );
    assert!(storescu(node.port, &files_under(&dir), &[])
        .status
        .success());
    wait_for("the new series complete", Duration::from_secs(30), || {
        (node.series().len() == 3 && node.series().iter().all(|s| s["state"] == "COMPLETE"))
            .then_some(())
    });
    // a second start finds nothing left to migrate
    drop(node);
    let again = NodeProc::start(&[
        ("SEGNODE_DATABASE__URL", url.as_str()),
        ("SEGNODE_STORAGE__KEEP_HOURS", "0"),
    ]);
    assert!(
        !again.log().contains("index schema migrated"),
        "{}",
        again.log()
    );
    assert_eq!(again.series().len(), 3);
}
