//! Issue 15, part 2: a PACS that forwards a whole study sends objects no pipeline reads (a dose report,
//! key objects, presentation states, a PDF, a scout of another modality, perhaps compressed in a syntax
//! segnode cannot decode). Every one is acknowledged and stored as received; only the CT is segmented;
//! the other series are kept and say why they were not processed.

mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::node::{meta_transfer_syntax, phantom_with, sop_uid_of, storescu, NodeProc};
use support::*;

const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";

#[test]
fn a_forwarded_study_is_stored_whole_and_only_the_ct_is_segmented() {
    let data = tempfile::tempdir().unwrap();
    let ct_dir = data.path().join("ct");
    phantom_with(&ct_dir, &ct_dir.with_extension("truth"), 40, 128, &["--seed", "4"]);
    let ct = files_under(&ct_dir);
    let other = data.path().join("other");
    let out = run_py(
        "make_nonimage.py",
        &[ct[0].to_str().unwrap(), other.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("made JSON");
    // the scout in JPEG-LS, as a PACS that may not decompress holds it
    let cr = other.join("cr.dcm");
    let cr_jls = other.join("cr_jls.dcm");
    let enc = run_with_timeout(
        std::process::Command::new("dcmcjpls").arg(&cr).arg(&cr_jls),
        Duration::from_secs(60),
    );
    assert!(enc.status.success(), "{}", String::from_utf8_lossy(&enc.stderr));
    std::fs::remove_file(&cr).unwrap();
    let extra: Vec<PathBuf> = files_under(&other);
    assert_eq!(extra.len(), 5);

    let node = NodeProc::start_with(
        &[],
        "[[rules]]\nname = \"everything\"\npipelines = [\"lung\"]\ndestinations = []\n",
    );
    let sent = storescu(node.port, &ct, &[]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    // the rest as a PACS forwards it: each file in its own transfer syntax, never decompressed
    let fwd = run_with_timeout(
        std::process::Command::new("dcmsend")
            .args(["-aet", "DCMSEND", "-aec", "SEGNODE", "--decompress-never"])
            .arg("127.0.0.1")
            .arg(node.port.to_string())
            .args(&extra),
        Duration::from_secs(60),
    );
    assert!(
        fwd.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fwd.stdout),
        String::from_utf8_lossy(&fwd.stderr)
    );
    let mut all = ct.clone();
    all.extend(extra.iter().cloned());
    // six series: the CT and one per forwarded object, all complete, every instance stored
    node.wait_complete(6, Duration::from_secs(60));
    let stored = node.stored_files();
    assert_eq!(stored.len(), all.len(), "{stored:#?}");
    let cr_uid = made["cr"][1].as_str().unwrap();
    let cr_stored = stored
        .iter()
        .find(|p| sop_uid_of(p) == cr_uid)
        .expect("the JPEG-LS scout is stored");
    assert!(
        meta_transfer_syntax(cr_stored).contains(JPEG_LS_LOSSLESS),
        "stored as received: {}",
        meta_transfer_syntax(cr_stored)
    );
    // only the CT gets a job, and it runs
    let ct_series = sop_series_of(&ct[0]);
    let job = wait_for("the CT's job done", Duration::from_secs(120), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    assert_eq!(job["series_uid"], ct_series.as_str());
    assert_eq!(node.jobs().len(), 1, "{:#?}", node.jobs());
    for name in ["dose_sr", "ko", "pr", "pdf", "cr"] {
        let series = made[name][2].as_str().unwrap();
        let history = wait_for("the routing decision", Duration::from_secs(30), || {
            let h = node.history(series);
            h.iter().any(|e| e.contains("stored, not processed")).then_some(h)
        });
        assert!(
            history
                .iter()
                .any(|e| e.contains("no image a pipeline reads")),
            "{name}: {history:#?}"
        );
    }
}

/// SeriesInstanceUID of a file, read with dcmdump.
fn sop_series_of(path: &std::path::Path) -> String {
    let out = run_with_timeout(
        std::process::Command::new("dcmdump")
            .args(["-s", "+P", "0020,000e"])
            .arg(path),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("SeriesInstanceUID")
        .to_string()
}
