//! In-process ONNX models (issue 17): small models built by `tests/py/onnx_fixtures.py` with the Python
//! `onnx` package, run by segnode and checked against `onnxruntime` by `tests/py/onnx_compare.py`
//! (written from the README's conventions, no segnode code); an MR phantom through the node to a real
//! Orthanc with an `onnx:` rule; manifests that do not fit their model refused at start, and a model
//! past its timeout failing.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::node::{segnode_bin, storescu, NodeProc};
use support::orthanc::OrthancProc;
use support::*;

/// The models and an MR series, built once per test (each test has its own folder).
fn fixtures(dir: &Path) -> (PathBuf, PathBuf, Value) {
    let models = dir.join("models");
    let out = run_py(
        "onnx_fixtures.py",
        &["models", models.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mr = dir.join("mr");
    let truth = dir.join("truth.json");
    let out = run_py(
        "onnx_fixtures.py",
        &["mr", mr.to_str().unwrap(), truth.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    (models, mr, truth)
}

const TUMOUR: &str = r#"{ channel = 1, name = "Tumour", category = { code = "49755003", scheme = "SCT", meaning = "Morphologically Altered Structure" }, type = { code = "108369006", scheme = "SCT", meaning = "Neoplasm" }"#;
const OTHER: &str = r#"{ channel = 2, name = "Other", category = { code = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }, type = { code = "85756007", scheme = "SCT", meaning = "Tissue" } }"#;

/// The two-channel model: z-score over the head and a window, resampled to 1.5 mm and seen as RAS.
fn net2ch_manifest(models: &Path, channels: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
file = "net2ch.onnx"
name = "TestNet2ch"
version = "0.1"

[input]
modality = ["MR"]
spacing_mm = [1.5, 1.5, 1.5]
orientation = "RAS"
patch = [16, 16, 16]
overlap = 0.5
{channels}

[output]
activation = "none"
labels = [ {TUMOUR} }}, {OTHER} ]
"#
    );
    let path = models.join(format!("net2ch-{}.toml", channels.matches("[[").count()));
    std::fs::write(&path, text).unwrap();
    path
}

const TWO_CHANNELS: &str = r#"
[[input.channels]]
name = "T1 z-score"
normalise = { kind = "zscore", over = "nonzero" }

[[input.channels]]
name = "T1 window"
normalise = { kind = "window", low = 0, high = 1000 }
"#;

const ONE_CHANNEL: &str = r#"
[[input.channels]]
name = "T1 z-score"
normalise = { kind = "zscore", over = "nonzero" }
"#;

/// The threshold model: tumour where the window 0…1000 passes 0.5, the largest component kept.
fn tumour_manifest(models: &Path) -> PathBuf {
    let text = format!(
        r#"
[model]
file = "threshold.onnx"
name = "TumourNet"
version = "0.3"

[input]
modality = ["MR"]
spacing_mm = [1.0, 1.0, 1.0]
orientation = "LPS"
patch = [24, 24, 24]
overlap = 0.25

[[input.channels]]
name = "T1"
normalise = {{ kind = "window", low = 0, high = 1000 }}

[output]
labels = [ {TUMOUR}, largest_component = true, min_size_mm3 = 50 }} ]
"#
    );
    let path = models.join("tumour.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn segment_with_model(
    manifest: &Path,
    input: &Path,
    out: &Path,
    extra: &[&str],
) -> (bool, Value, String) {
    let mut cmd = Command::new(segnode_bin());
    cmd.args(["segment", "--model"])
        .arg(manifest)
        .arg("--input")
        .arg(input)
        .arg("--output-dir")
        .arg(out)
        .args(extra);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let v: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or(Value::Null);
    (
        o.status.success(),
        v,
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn inference_matches_onnxruntime_through_patches_and_resampling() {
    let dir = tempfile::tempdir().unwrap();
    let (models, mr, _) = fixtures(dir.path());
    let manifest = net2ch_manifest(&models, TWO_CHANNELS);
    let dump = dir.path().join("dump");
    let out = dir.path().join("out");
    let (ok, v, err) = segment_with_model(
        &manifest,
        &mr,
        &out,
        &["--forms", "seg", "--dump-dir", dump.to_str().unwrap()],
    );
    assert!(ok, "segment: {v}\n{err}");
    assert_eq!(v["status"], "ok", "{v}");
    let d = &v["details"];
    // 36 × 2 mm, 80 × 1 mm, 72 × 1 mm as RAS at 1.5 mm: [48, 53, 48], 5 × 6 × 5 patches of 16³
    assert_eq!(d["model_grid"], serde_json::json!([48, 53, 48]), "{v}");
    assert_eq!(d["patches"], 150, "{v}");
    assert_eq!(d["model"]["name"], "TestNet2ch");
    let seg = PathBuf::from(v["output"].as_str().expect("a SEG was written"));
    let cmp = run_py(
        "onnx_compare.py",
        &[
            manifest.to_str().unwrap(),
            mr.to_str().unwrap(),
            dump.to_str().unwrap(),
            seg.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    let report = String::from_utf8_lossy(&cmp.stdout).to_string();
    println!("onnx_compare: {report}");
    assert!(
        cmp.status.success(),
        "segnode and onnxruntime disagree: {report}\n{}",
        String::from_utf8_lossy(&cmp.stderr)
    );
    let r: Value = serde_json::from_str(report.lines().last().unwrap()).unwrap();
    assert!(r["prob_max_abs"].as_f64().unwrap() <= 1e-4, "{r}");
    assert_eq!(r["patches"], 150);
    let errors = dciodvfy_errors(&seg);
    assert!(errors.is_empty(), "dciodvfy:\n{}", dciodvfy_output(&seg));
}

#[test]
fn mr_phantom_through_the_node_comes_back_as_seg_in_orthanc() {
    let dir = tempfile::tempdir().unwrap();
    let (models, mr, truth) = fixtures(dir.path());
    let manifest = tumour_manifest(&models);
    let orthanc = OrthancProc::start();
    let toml = format!(
        "[[destinations]]\nname = \"pacs\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {}\nresults = [\"seg\", \"rtstruct\", \"sr\"]\n\
         [pipelines.onnx.tumour]\nmanifest = \"{m}\"\ntimeout_s = 120\n\
         [pipelines.onnx.slow]\nmanifest = \"{m}\"\ntimeout_s = 0.001\n\
         [[rules]]\nname = \"brain-mr\"\npipelines = [\"onnx:tumour\", \"onnx:slow\"]\ndestinations = [\"pacs\"]\n[rules.match]\nmodality = [\"MR\"]\nmin_slices = 10\n",
        orthanc.dicom_port,
        m = manifest.display()
    );
    // one attempt: the model past its time is dead at once (as an external model's job would be after
    // its attempts)
    let node = NodeProc::start_with(&[("SEGNODE_WORKERS__MAX_ATTEMPTS", "1")], &toml);
    let files = files_under(&mr);
    let out = storescu(node.port, &files, &[]);
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seg_series = wait_for("the SEG in Orthanc", Duration::from_secs(180), || {
        orthanc.series_of_modality("SEG").into_iter().next()
    });
    // the other configured forms arrive too
    for modality in ["RTSTRUCT", "SR"] {
        wait_for(modality, Duration::from_secs(60), || {
            orthanc.series_of_modality(modality).into_iter().next()
        });
    }
    let jobs = wait_for("both jobs finished", Duration::from_secs(120), || {
        let j = node.jobs();
        (j.len() == 2
            && j.iter()
                .all(|x| x["state"] == "DONE" || x["state"] == "DEAD"))
        .then_some(j)
    });
    let by = |p: &str| jobs.iter().find(|j| j["pipeline"] == p).cloned().unwrap();
    let slow = by("onnx:slow");
    assert_eq!(slow["state"], "DEAD", "{slow:#}");
    assert!(
        slow["error"]
            .as_str()
            .unwrap_or("")
            .contains("exceeded its timeout of 0.001 s"),
        "{slow:#}"
    );
    let job = by("onnx:tumour");
    assert_eq!(job["state"], "DONE");
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let model = &result["details"]["model"];
    assert_eq!(model["name"], "TumourNet");
    assert_eq!(model["version"], "0.3");
    let sha = Command::new("sha256sum")
        .arg(models.join("threshold.onnx"))
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        model["sha256"].as_str().unwrap(),
        sha.split_whitespace().next().unwrap()
    );
    // the volume of the sphere (partial volume at the border: within 20 %)
    let r = truth["radius_mm"].as_f64().unwrap();
    let want_ml = 4.0 / 3.0 * std::f64::consts::PI * r * r * r / 1000.0;
    let seg0 = &result["segments"][0];
    assert_eq!(seg0["label"], "Tumour", "{result:#}");
    let got_ml = seg0["measurements"]["volume (mL)"].as_f64().unwrap();
    assert!(
        (got_ml - want_ml).abs() <= 0.2 * want_ml,
        "tumour {got_ml} mL, sphere {want_ml:.2} mL"
    );
    // the SEG names the model and passes dciodvfy
    let dl = tempfile::tempdir().unwrap();
    let segs = orthanc.download_series(&seg_series, dl.path());
    assert_eq!(segs.len(), 1);
    let read = Command::new(python())
        .args([
            "-c",
            "import sys, pydicom; ds = pydicom.dcmread(sys.argv[1]); s = ds.SegmentSequence[0]; \
             print(s.SegmentAlgorithmName, s.SegmentAlgorithmVersion if 'SegmentAlgorithmVersion' in s else '', \
             s.SegmentedPropertyTypeCodeSequence[0].CodeValue, ds.ReferencedSeriesSequence[0].SeriesInstanceUID)",
        ])
        .arg(&segs[0])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&read.stdout).to_string();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(line.starts_with("TumourNet "), "{line}");
    assert!(line.contains("108369006"), "{line}");
    assert!(
        line.contains(truth["series_uid"].as_str().unwrap()),
        "{line}"
    );
    let errors = dciodvfy_errors(&segs[0]);
    assert!(
        errors.is_empty(),
        "dciodvfy:\n{}",
        dciodvfy_output(&segs[0])
    );
}

#[test]
fn manifests_that_do_not_fit_are_refused_and_a_slow_model_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (models, mr, _) = fixtures(dir.path());
    let check = |manifest: &Path| {
        let o = run_with_timeout(
            Command::new(segnode_bin())
                .args(["models", "check"])
                .arg(manifest),
            Duration::from_secs(120),
        );
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    // the good one: tensors and operators listed, all supported
    let good = net2ch_manifest(&models, TWO_CHANNELS);
    let (ok, text) = check(&good);
    assert!(ok, "{text}");
    for want in [
        "opset     13",
        "image [1, 2, 16, 16, 16]",
        "Conv",
        "Softmax",
        "supported",
        "fits its model",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    // one channel for a two-channel model
    let one = net2ch_manifest(&models, ONE_CHANNEL);
    let (ok, text) = check(&one);
    assert!(!ok, "{text}");
    assert!(
        text.contains("channels is 2, the manifest gives 1"),
        "{text}"
    );
    // an operator tract does not have
    let unsupported = models.join("unsupported.toml");
    std::fs::write(
        &unsupported,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("net2ch.onnx", "unsupported.onnx"),
    )
    .unwrap();
    let (ok, text) = check(&unsupported);
    assert!(!ok, "{text}");
    assert!(
        text.contains("Frobnicate") && text.contains("NOT SUPPORTED"),
        "{text}"
    );

    // the node refuses to start on either, naming the problem
    for (manifest, says) in [(&one, "channels is 2"), (&unsupported, "Frobnicate")] {
        let node = NodeProc::prepare(
            &[],
            &format!(
                "[pipelines.onnx.bad]\nmanifest = \"{}\"\n",
                manifest.display()
            ),
        );
        let o = run_with_timeout(
            Command::new(segnode_bin())
                .args(["--config", node.config.to_str().unwrap(), "serve"])
                .envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "started with {}:\n{err}",
            manifest.display()
        );
        assert!(
            err.contains("pipelines.onnx") && err.contains(says),
            "{err}"
        );
    }

    // a model past its time fails with the reason (as an external model's job does)
    let (ok, v, _) = segment_with_model(
        &good,
        &mr,
        &dir.path().join("slow"),
        &["--timeout-s", "0.001"],
    );
    assert!(!ok);
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("exceeded its timeout"),
        "{v}"
    );
}

#[test]
fn two_series_of_a_study_feed_one_model_t1c_and_flair() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = run_py(
        "onnx_fixtures.py",
        &["models", models.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (t1, flair, truth) = (
        dir.path().join("t1"),
        dir.path().join("flair"),
        dir.path().join("truth.json"),
    );
    let out = run_py(
        "onnx_fixtures.py",
        &[
            "mr",
            t1.to_str().unwrap(),
            truth.to_str().unwrap(),
            "--companion",
            flair.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    // tumour where both the T1c (this series) and the FLAIR (another series of the study, 3 mm slices,
    // 1.25 mm pixels, another field of view) are bright: wrong without a FLAIR channel lined up in space
    let manifest = models.join("two-series.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[model]
file = "threshold2.onnx"
name = "T1cFlairNet"
version = "1.0"
[input]
modality = ["MR"]
patch = [24, 24, 24]
overlap = 0.25
[[input.channels]]
name = "T1c"
normalise = {{ kind = "window", low = 0, high = 1000 }}
[[input.channels]]
name = "FLAIR"
series = "flair"
normalise = {{ kind = "window", low = 0, high = 1000 }}
[output]
labels = [ {TUMOUR}, largest_component = true }} ]
"#
        ),
    )
    .unwrap();
    let orthanc = OrthancProc::start();
    let toml = format!(
        "{}[pipelines.onnx.tumour2]\nmanifest = \"{}\"\n\
         [[rules]]\nname = \"t1c\"\npipelines = [\"onnx:tumour2\"]\ndestinations = [\"pacs\"]\n[rules.match]\nmodality = [\"MR\"]\nseries_description = \"T1\"\n",
        support::node::destination_toml(orthanc.dicom_port),
        manifest.display()
    );
    let node = NodeProc::start_with(
        &[
            ("SEGNODE_WORKERS__RETRY_BASE_S", "1"),
            ("SEGNODE_WORKERS__MAX_ATTEMPTS", "20"),
        ],
        &toml,
    );
    // the T1c first: its job waits (fails its attempt with the reason, retried) until the FLAIR is complete
    assert!(storescu(node.port, &files_under(&t1), &[]).status.success());
    let waiting = wait_for(
        "the job waiting for the FLAIR",
        Duration::from_secs(60),
        || {
            node.jobs().into_iter().find(|j| {
                j["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("\"flair\"") && e.contains("complete"))
            })
        },
    );
    assert_eq!(waiting["pipeline"], "onnx:tumour2");
    assert!(storescu(node.port, &files_under(&flair), &[])
        .status
        .success());
    wait_for("the SEG in Orthanc", Duration::from_secs(180), || {
        orthanc.series_of_modality("SEG").into_iter().next()
    });
    let job = wait_for("the job done", Duration::from_secs(30), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    let result: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let companions = &result["details"]["companions"];
    assert_eq!(companions[0]["series"], "flair", "{result:#}");
    assert_eq!(
        companions[0]["series_instance_uid"],
        truth["companion_series_uid"]
    );
    let r = truth["radius_mm"].as_f64().unwrap();
    let want_ml = 4.0 / 3.0 * std::f64::consts::PI * r * r * r / 1000.0;
    let got_ml = result["segments"][0]["measurements"]["volume (mL)"]
        .as_f64()
        .unwrap();
    assert!(
        (got_ml - want_ml).abs() <= 0.2 * want_ml,
        "tumour {got_ml} mL from T1c + FLAIR, sphere {want_ml:.2} mL: {result:#}"
    );
    // only the T1c series was routed: one job
    assert_eq!(node.jobs().len(), 1);
}
