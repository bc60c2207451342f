//! Result forms end to end: `segnode segment --output-dir --forms seg,sc,rtstruct,sr` on chest phantoms,
//! the shared real chest CT and CBCT electrode phantoms from both generators; every object passes
//! dciodvfy with 0 errors and tests/py/check_forms.py (pydicom / highdicom, independent of the Rust code)
//! finds the RTSTRUCT, SC and SR consistent with the SEG, the source and the JSON summary. Then a node
//! delivers all four forms to Orthanc and only the overlay to a second destination that asks for it.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::node::{destination_toml, phantom_with, storescu, NodeProc};
use support::orthanc::OrthancProc;
use support::storescp::StoreScp;
use support::*;

const ALL: &str = "seg,sc,rtstruct,sr";

/// Run the CLI with every form; returns the summary and where it was saved.
fn segment_all(pipeline: &str, input: &Path, out: &Path) -> (Value, PathBuf) {
    let o = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_segnode"))
            .args(["segment", "--pipeline", pipeline, "--forms", ALL, "--input"])
            .arg(input)
            .arg("--output-dir")
            .arg(out),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(j["status"], "ok", "{j}");
    let saved = out.join("summary.json");
    std::fs::write(&saved, stdout.as_bytes()).unwrap();
    (j, saved)
}

/// dciodvfy error count per form (every object checked).
fn dciodvfy_per_form(summary: &Value) -> std::collections::BTreeMap<String, (usize, usize)> {
    let mut out = std::collections::BTreeMap::new();
    for o in summary["outputs"].as_array().unwrap() {
        let path = Path::new(o["path"].as_str().unwrap());
        let errors = dciodvfy_errors(path);
        assert!(
            errors.is_empty(),
            "{} ({}):\n{}",
            o["form"],
            path.display(),
            dciodvfy_output(path)
        );
        let e = out
            .entry(o["form"].as_str().unwrap().to_string())
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += errors.len();
    }
    out
}

fn check_forms(src: &Path, summary: &Path, window: (f64, f64)) -> (bool, Value) {
    let out = run_py(
        "check_forms.py",
        &[
            src.to_str().unwrap(),
            summary.to_str().unwrap(),
            &window.0.to_string(),
            &window.1.to_string(),
        ],
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| {
            panic!(
                "check_forms.py printed no JSON:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.success(), report)
}

fn assert_consistent(what: &str, src: &Path, pipeline: &str, window: (f64, f64)) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (j, saved) = segment_all(pipeline, src, &dir.path().join("out"));
    let counts = dciodvfy_per_form(&j);
    for f in ["seg", "sc", "rtstruct", "sr"] {
        assert!(counts.contains_key(f), "{what}: no {f} written: {j}");
    }
    let (ok, report) = check_forms(src, &saved, window);
    assert!(ok, "{what}: {report:#}");
    for (label, d) in report["rtstruct"]["dice"].as_object().unwrap() {
        assert!(d.as_f64().unwrap() >= 0.98, "{what}: {label} {d}");
    }
    println!("FORMS {what}: dciodvfy (objects, errors) {counts:?}; {report}");
    report
}

#[test]
fn lung_phantoms_every_form_is_clean_and_matches_the_seg() {
    let data = tempfile::tempdir().unwrap();
    for (variant, seed) in [("standard", "1"), ("flipped", "2"), ("feet-first", "3")] {
        let dir = data.path().join(variant);
        phantom_with(
            &dir,
            &dir.with_extension("truth"),
            48,
            160,
            &["--variant", variant, "--seed", seed],
        );
        let r = assert_consistent(variant, &dir, "lung", (-600.0, 1500.0));
        assert_eq!(r["sr"]["groups"].as_object().unwrap().len(), 2, "{r}");
        assert!(r["sc"]["outline_pixels"].as_u64().unwrap() > 1000, "{r}");
    }
}

#[test]
fn real_chest_ct_every_form_is_clean_and_matches_the_seg() {
    let src = shared_data("chest-ct-crop");
    let r = assert_consistent("chest-ct-crop", &src, "lung", (-600.0, 1500.0));
    assert!(r["sc"]["instances"].as_u64().unwrap() > 50, "{r}");
}

#[test]
fn electrode_arrays_both_generators_every_form_with_contact_points() {
    let data = tempfile::tempdir().unwrap();
    let first = data.path().join("cbct");
    phantom_cli(&[
        "--kind",
        "cbct",
        "--out",
        first.to_str().unwrap(),
        "--truth",
        data.path().join("cbct.truth").to_str().unwrap(),
    ]);
    let r = assert_consistent(
        "cbct (first generator)",
        &first,
        "cochlear",
        (700.0, 4000.0),
    );
    assert!(r["rtstruct"]["points"].as_u64().unwrap() >= 12, "{r}");
    let second = data.path().join("cbct2");
    let out = run_py(
        "cbct2.py",
        &["--seed", "3", "--out", second.to_str().unwrap()],
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = assert_consistent(
        "cbct2 (second generator)",
        &second.join("series"),
        "cochlear",
        (700.0, 4000.0),
    );
    assert!(r["sr"]["points"].as_u64().unwrap() >= 8, "{r}");
}

#[test]
fn the_checker_catches_a_contour_off_its_slice_and_a_stray_overlay_pixel() {
    let data = tempfile::tempdir().unwrap();
    let src = data.path().join("chest");
    phantom_with(&src, &src.with_extension("truth"), 30, 96, &["--seed", "9"]);
    let (j, saved) = segment_all("lung", &src, &data.path().join("out"));
    let (ok, report) = check_forms(&src, &saved, (-600.0, 1500.0));
    assert!(ok, "{report}");
    let path_of = |form: &str| {
        j["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["form"] == form)
            .map(|o| o["path"].as_str().unwrap().to_string())
            .unwrap()
    };
    // move one contour 0.5 mm off its plane, paint one pixel far from any boundary
    let spoil = format!(
        "import pydicom, numpy as np\n\
         r = pydicom.dcmread('{rt}')\n\
         c = r.ROIContourSequence[0].ContourSequence[0]\n\
         d = [float(v) for v in c.ContourData]\n\
         d[2] += 0.5\n\
         c.ContourData = [f'{{v:.3f}}' for v in d]\n\
         r.save_as('{rt}')\n\
         s = pydicom.dcmread('{sc}')\n\
         a = s.pixel_array.copy()\n\
         a[a.shape[0] - 2, a.shape[1] // 2] = [255, 0, 0]\n\
         s.PixelData = a.tobytes()\n\
         s.save_as('{sc}')\n",
        rt = path_of("rtstruct"),
        sc = path_of("sc"),
    );
    let o = Command::new(python())
        .arg("-c")
        .arg(spoil)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, report) = check_forms(&src, &saved, (-600.0, 1500.0));
    assert!(!ok, "{report}");
    let problems = report["problems"].to_string();
    assert!(problems.contains("off its slice plane"), "{problems}");
    assert!(
        problems.contains("coloured pixels off the mask boundary"),
        "{problems}"
    );
}

#[test]
fn unknown_forms_are_refused_by_the_cli_and_the_config() {
    let o = Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args([
            "segment",
            "--input",
            "/nonexistent",
            "--output-dir",
            "/tmp/x",
            "--forms",
            "seg,pdf",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(err.contains("unknown result form `pdf`"), "{err}");
    let node = NodeProc::prepare(
        &[],
        "[[destinations]]\nname = \"pacs\"\nae_title = \"P\"\nhost = \"127.0.0.1\"\nport = 4242\nresults = [\"seg\", \"png\"]\n",
    );
    let out = node.cli(&["serve"]);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("destinations.results") && log.contains("png"),
        "{log}"
    );
}

#[test]
fn each_destination_gets_the_forms_it_asks_for() {
    let data = tempfile::tempdir().unwrap();
    let src = data.path().join("chest");
    phantom_with(
        &src,
        &src.with_extension("truth"),
        40,
        128,
        &["--seed", "5"],
    );
    let orthanc = OrthancProc::start();
    let viewer = StoreScp::start("VIEWER");
    let config = format!(
        "{}results = [\"seg\", \"rtstruct\", \"sc\", \"sr\"]\n\
         [[destinations]]\nname = \"viewer\"\nae_title = \"VIEWER\"\nhost = \"127.0.0.1\"\nport = {}\nresults = [\"sc\"]\n\
         [[rules]]\nname = \"chest\"\npipelines = [\"lung\"]\ndestinations = [\"pacs\", \"viewer\"]\n[rules.match]\nmodality = [\"CT\"]\n",
        destination_toml(orthanc.dicom_port),
        viewer.port
    );
    let node = NodeProc::start_with(&[], &config);
    let files = files_under(&src);
    assert!(storescu(node.port, &files, &[]).status.success());
    let uid = node.wait_complete(1, Duration::from_secs(60))[0]["series_uid"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = wait_for("every delivery SENT", Duration::from_secs(180), || {
        let items = node.outbox();
        (!items.is_empty() && items.iter().all(|d| d["state"] == "SENT")).then_some(items)
    });
    let job = &node.jobs()[0];
    let forms = &serde_json::from_str::<Value>(job["result"].as_str().unwrap_or("{}"))
        .unwrap_or_default()["forms"];
    let sc = forms["sc"].as_u64().expect("sc count in the job result");
    let to = |dest: &str| sent.iter().filter(|d| d["destination"] == dest).count() as u64;
    assert_eq!(to("pacs"), 3 + sc, "{forms}");
    assert_eq!(to("viewer"), sc, "{forms}");
    // Orthanc holds the four forms in the source study
    for modality in ["SEG", "OT", "RTSTRUCT", "SR"] {
        let series = orthanc.series_of_modality(modality);
        assert_eq!(series.len(), 1, "{modality} in Orthanc");
        let s = orthanc.get(&format!("/series/{}", series[0]));
        let study = orthanc.get(&format!("/studies/{}", s["ParentStudy"].as_str().unwrap()));
        assert_eq!(
            study["MainDicomTags"]["StudyInstanceUID"],
            sop_study_of(&files[0]),
            "{modality} is not in the source study"
        );
    }
    // the viewer got the overlay only
    let got = viewer.received();
    assert_eq!(got.len() as u64, sc);
    for f in &got {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("SC"), "not a secondary capture: {name}");
    }
    let history = node.history(&uid);
    assert!(
        history
            .iter()
            .any(|e| e.contains("delivered rtstruct") && e.contains("to pacs")),
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .any(|e| e.contains("delivered sc") && e.contains("to viewer")),
        "{history:#?}"
    );
}

/// StudyInstanceUID of a DICOM file (read with dicom-rs).
fn sop_study_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("source file");
    let e = obj
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .expect("StudyInstanceUID");
    e.to_str()
        .expect("StudyInstanceUID as text")
        .trim_end_matches('\0')
        .trim()
        .to_string()
}
