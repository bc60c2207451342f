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
    phantom_with(
        &ct_dir,
        &ct_dir.with_extension("truth"),
        40,
        128,
        &["--seed", "4"],
    );
    let ct = files_under(&ct_dir);
    let other = data.path().join("other");
    let out = run_py(
        "make_nonimage.py",
        &[ct[0].to_str().unwrap(), other.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("made JSON");
    // the scout in JPEG-LS, as a PACS that may not decompress holds it
    let cr = other.join("cr.dcm");
    let cr_jls = other.join("cr_jls.dcm");
    let enc = run_with_timeout(
        std::process::Command::new("dcmcjpls").arg(&cr).arg(&cr_jls),
        Duration::from_secs(60),
    );
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    std::fs::remove_file(&cr).unwrap();
    let extra: Vec<PathBuf> = files_under(&other);
    assert_eq!(extra.len(), 5);

    let node = NodeProc::start_with(
        &[],
        "[[rules]]\nname = \"everything\"\npipelines = [\"lung\"]\ndestinations = []\n",
    );
    let sent = storescu(node.port, &ct, &[]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // the rest as a PACS forwards it: each file in its own transfer syntax, never decompressed
    dcmsend(node.port, &extra);
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
            h.iter()
                .any(|e| e.contains("stored, not processed"))
                .then_some(h)
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

/// Forward `files` as a PACS does: DCMTK dcmsend, each file in its own transfer syntax, never
/// decompressed; panics when a file is not acknowledged.
fn dcmsend(port: u16, files: &[PathBuf]) {
    let fwd = run_with_timeout(
        std::process::Command::new("dcmsend")
            .args(["-aet", "DCMSEND", "-aec", "SEGNODE", "--decompress-never"])
            .arg("127.0.0.1")
            .arg(port.to_string())
            .args(files),
        Duration::from_secs(120),
    );
    assert!(
        fwd.status.success(),
        "dcmsend: {}{}",
        String::from_utf8_lossy(&fwd.stdout),
        String::from_utf8_lossy(&fwd.stderr)
    );
}

/// Compress every file of `src` into `dst` with DCMTK's dcmcjpls (`extra`: e.g. near-lossless).
fn jpeg_ls(src: &[PathBuf], dst: &std::path::Path, extra: &[&str]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dst).unwrap();
    src.iter()
        .map(|f| {
            let out = dst.join(f.file_name().unwrap());
            let o = run_with_timeout(
                std::process::Command::new("dcmcjpls")
                    .args(extra)
                    .arg(f)
                    .arg(&out),
                Duration::from_secs(60),
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            out
        })
        .collect()
}

#[test]
fn jpeg_ls_series_are_stored_as_received_decoded_to_the_same_hu_and_segmented() {
    use segnode_imaging::volume::{load_series, LoadOptions};
    let data = tempfile::tempdir().unwrap();
    let raw_dir = data.path().join("raw");
    phantom_with(
        &raw_dir,
        &raw_dir.with_extension("truth"),
        30,
        128,
        &["--seed", "6"],
    );
    let raw = files_under(&raw_dir);
    let original = load_series(&raw_dir, &LoadOptions::default()).unwrap();
    let node = NodeProc::start_with(
        &[],
        "[[rules]]\nname = \"ct\"\npipelines = [\"lung\"]\ndestinations = []\n[rules.match]\nmodality = [\"CT\"]\n",
    );
    for (name, extra, max_dev) in [
        ("lossless", &[][..], 0i16),
        ("near-lossless", &["+en", "+md", "2"][..], 2),
    ] {
        // a copy of the series under new UIDs for each encoding, so each is its own series
        let renamed = data.path().join(format!("{name}-src"));
        let src: Vec<PathBuf> = if name == "lossless" {
            raw.clone()
        } else {
            phantom_with(
                &renamed,
                &renamed.with_extension("truth"),
                30,
                128,
                &["--seed", "7"],
            );
            files_under(&renamed)
        };
        let reference = if name == "lossless" {
            original.clone()
        } else {
            load_series(&renamed, &LoadOptions::default()).unwrap()
        };
        let jls = jpeg_ls(&src, &data.path().join(name), extra);
        dcmsend(node.port, &jls);
        let uid = reference.series.series_instance_uid.clone();
        let job = wait_for(
            &format!("{name}: job done"),
            Duration::from_secs(120),
            || {
                node.jobs()
                    .into_iter()
                    .find(|j| j["series_uid"] == uid.as_str() && j["state"] == "DONE")
            },
        );
        let result: serde_json::Value =
            serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
        assert_eq!(result["status"], "ok", "{name}: {result}");
        let stored: Vec<PathBuf> = node
            .stored_files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&uid))
            .collect();
        assert_eq!(stored.len(), src.len());
        let ts = meta_transfer_syntax(&stored[0]);
        let want_ts = if max_dev == 0 {
            JPEG_LS_LOSSLESS
        } else {
            "1.2.840.10008.1.2.4.81"
        };
        assert!(ts.contains(want_ts), "{name}: stored as {ts}");
        let loaded = load_series(stored[0].parent().unwrap(), &LoadOptions::default()).unwrap();
        assert_eq!(loaded.hu.shape(), reference.hu.shape());
        let worst = loaded
            .hu
            .iter()
            .zip(reference.hu.iter())
            .map(|(a, b)| (a - b).abs())
            .max()
            .unwrap();
        assert!(worst <= max_dev, "{name}: HU differ by up to {worst}");
        println!(
            "JPEG-LS {name}: {} slices, largest HU difference {worst}",
            src.len()
        );
    }
}

#[test]
fn a_study_forwarded_by_orthanc_is_stored_whole_and_only_the_ct_is_segmented() {
    use support::orthanc::OrthancProc;
    let data = tempfile::tempdir().unwrap();
    let ct_dir = data.path().join("ct");
    phantom_with(
        &ct_dir,
        &ct_dir.with_extension("truth"),
        40,
        128,
        &["--seed", "12"],
    );
    let ct = files_under(&ct_dir);
    let other = data.path().join("other");
    let out = run_py(
        "make_nonimage.py",
        &[ct[0].to_str().unwrap(), other.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("made JSON");
    // the study as a PACS holds it: the CT, a dose report, a key object, a presentation state
    let mut study: Vec<PathBuf> = ct.clone();
    study.extend(["dose_sr", "ko", "pr"].map(|n| other.join(format!("{n}.dcm"))));
    let mut node = NodeProc::prepare(
        &[],
        "[[rules]]\nname = \"everything\"\npipelines = [\"lung\"]\ndestinations = []\n",
    );
    node.spawn();
    let port = node.port;
    let orthanc = OrthancProc::start_with(|cfg, _| {
        cfg["DicomModalities"] = serde_json::json!({ "segnode": ["SEGNODE", "127.0.0.1", port] });
    });
    let up = run_with_timeout(
        std::process::Command::new("storescu")
            .args(["-aet", "STORESCU", "-aec", "ORTHANC", "127.0.0.1"])
            .arg(orthanc.dicom_port.to_string())
            .args(&study),
        Duration::from_secs(120),
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let studies = orthanc.get("/studies");
    let id = studies[0]
        .as_str()
        .expect("one study in Orthanc")
        .to_string();
    // Orthanc forwards the whole study to segnode (its C-STORE SCU, calling AE ORTHANC)
    let fwd = run_with_timeout(
        std::process::Command::new("curl")
            .args(["-sf", "--max-time", "120", "-X", "POST", "-d", &id])
            .arg(format!(
                "http://127.0.0.1:{}/modalities/segnode/store",
                orthanc.http_port
            )),
        Duration::from_secs(150),
    );
    assert!(
        fwd.status.success(),
        "Orthanc forward: {}\n{}",
        String::from_utf8_lossy(&fwd.stdout),
        orthanc.log()
    );
    node.wait_complete(4, Duration::from_secs(60));
    assert_eq!(node.stored_files().len(), study.len());
    let ct_series = sop_series_of(&ct[0]);
    let job = wait_for("the CT's job done", Duration::from_secs(120), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    assert_eq!(job["series_uid"], ct_series.as_str());
    assert_eq!(node.jobs().len(), 1);
    for name in ["dose_sr", "ko", "pr"] {
        let series = made[name][2].as_str().unwrap();
        let h = node.history(series);
        assert!(
            h.iter().any(|e| e.contains("no image a pipeline reads")),
            "{name}: {h:#?}"
        );
    }
}
