//! The `segnode-phantom` binary: a small chest series and its truth, the JSON summary on stdout, and a
//! refused argument as an error JSON line with a failing exit status.

use std::process::Command;

fn phantom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segnode-phantom"))
}

#[test]
fn writes_a_chest_series_with_its_truth() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("ct");
    let truth = dir.path().join("truth.raw");
    let out = phantom()
        .args(["--matrix", "64", "--slices", "20", "--out"])
        .arg(&series)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["shape"], serde_json::json!([20, 64, 64]), "{j}");
    assert_eq!(std::fs::read_dir(&series).unwrap().count(), 20);
    assert_eq!(std::fs::metadata(&truth).unwrap().len(), 20 * 64 * 64);
}

#[test]
fn a_refused_argument_fails_with_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = phantom()
        .args(["--slices", "1", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["status"], "error", "{j}");
    assert!(j["error"].as_str().unwrap().contains("slices"), "{j}");
}
