//! The `cochlear` pipeline on phantoms of the second, independently written CBCT generator
//! (tests/py/cbct2.py: supersampled partial volume, Gaussian PSF, beam-hardening streaks, correlated
//! noise, band contacts on a platinum lead that saturates over dense capsule bone, HU or uncalibrated grey
//! values, clipped or not), as a new user would run it: DICOM written, `segnode segment` in its own
//! process, SEG read back and compared with the truth (issue 11).
//!
//! CI runs a fixed subset of the seeded sweep (benches/cochlear_sweep.py runs all of it): for these
//! seeds the contacts must be exact (none missed, none extra, each within 0.3 mm), the insertion angle
//! within 30°, the side right or `unknown` (never wrong); the SEG of one of them passes dciodvfy with no
//! errors and reads back bit-exact in highdicom, with no laterality modifier where the side is unknown.
//! Electrode Dice against the metal at physical size has a floor per array and for the subset's mean,
//! set just below what is measured (the mask of clipped metal is its half-peak extent, not the bloom;
//! a 0.2 mm lead wire is below the resolution of 0.1–0.4 mm voxels blurred by the PSF, which keeps it
//! well short of 0.9).

mod support;

use segnode_imaging::segment::cochlear::CochlearSegmenter;
use segnode_imaging::segment::Segmenter;
use segnode_imaging::volume::{load_series, LoadOptions};
use std::process::Command;
use std::time::Duration;

/// Seeds of the CI subset (a few minutes on 2 cores): both ears in 5, 8, 11 and 50, 0.15–0.3 mm voxels,
/// sagittal, axial, coronal and oblique stacks, metal unclipped or at the 16-bit ceiling (5, 8, 11; 50
/// was not found before the extended-range rule), clipped at 4095 with the lead over dense capsule
/// bone (13: a lead peak used to be kept as a contact) and at 3071 (18, 51: clipped lead stretches
/// used to be read as contacts), 10–22 contacts; 10: 24 contacts at 0.62 mm clipped at 4095 on a
/// 0.2 / 0.32 mm grid, whose clipped lead past the basal contact (lower peaks) used to be read as 28
/// more contacts.
const CI_SEEDS: &str = "5,8,10,11,13,18,50,51";

/// Lowest electrode Dice of one array of [`CI_SEEDS`]: measured 0.282 (seed 10: 24 contacts at 0.62 mm
/// on a 0.2 / 0.32 mm grid, clipped at 4095).
const MIN_DICE: f64 = 0.25;

/// Lowest mean electrode Dice over the arrays of [`CI_SEEDS`]: measured 0.684 (the saturated bloom as
/// the mask: 0.653, and 0.229 on seed 18, below both floors).
const MIN_MEAN_DICE: f64 = 0.67;

/// Run `benches/cochlear_sweep.py` on `seeds` as a user would (the phantoms written as DICOM, `segnode
/// segment` per case): its rows, and its printed table.
fn sweep(seeds: &str, limit: Duration) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rows.json");
    let out = support::run_with_timeout(
        Command::new(support::python())
            .arg(support::repo_root().join("benches/cochlear_sweep.py"))
            .args(["--segnode", env!("CARGO_BIN_EXE_segnode"), "--seeds", seeds])
            .args(["--jobs", "1", "--json"])
            .arg(&json),
        limit,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sweep failed");
    let rows = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (rows, text)
}

#[test]
fn second_generator_subset_contacts_angle_and_side() {
    let (rows, _) = sweep(CI_SEEDS, Duration::from_secs(900));
    assert!(rows.len() >= 5, "{} arrays", rows.len());
    for r in &rows {
        let what = format!(
            "seed {} {}: {}/{} contacts, max err {}, angle {} / {}, side {}, dice {:.3}",
            r["seed"],
            r["side"],
            r["found_contacts"],
            r["truth_contacts"],
            r["max_err"],
            r["angle_truth"],
            r["angle"],
            r["found_side"],
            r["dice"].as_f64().unwrap_or(0.0)
        );
        assert_eq!(r["wrong_side"], false, "{what}");
        assert!(
            r["found_side"] == r["side"] || r["found_side"] == "unknown",
            "{what}"
        );
        assert_eq!(r["exact"], true, "{what}");
        assert!(r["max_err"].as_f64().unwrap() <= 0.3, "{what}");
        let err = r["angle_err"].as_f64().unwrap_or(f64::INFINITY);
        assert!(err <= 30.0, "{what}");
        assert!(r["dice"].as_f64().unwrap_or(0.0) >= MIN_DICE, "{what}");
    }
    let mean = rows
        .iter()
        .map(|r| r["dice"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        / rows.len() as f64;
    println!("mean electrode Dice over {} arrays: {mean:.3}", rows.len());
    assert!(mean >= MIN_MEAN_DICE, "mean Dice {mean:.3}");
}

/// Seeds whose contacts the grid does not resolve: 26 (both ears, 22 contacts at 0.88 mm on 0.4 mm
/// voxels: 2.2 voxels per pitch) and 58 (24 at 0.67 mm on 0.4 mm voxels; 4 contacts seen in an array
/// that lies whole in the field). Their counts need not be exact, but a count that is not must be
/// flagged as not resolved (`contact_count_resolved` false, with the reason in the notes), never
/// reported as if it were; the side is never wrong.
const UNRESOLVED_SEEDS: &str = "26,58";

#[test]
fn second_generator_counts_the_grid_does_not_resolve_are_flagged() {
    let (rows, text) = sweep(UNRESOLVED_SEEDS, Duration::from_secs(600));
    assert_eq!(rows.len(), 3, "{text}");
    for r in &rows {
        let what = format!(
            "seed {} {}: {}/{} contacts, resolved {}",
            r["seed"], r["side"], r["found_contacts"], r["truth_contacts"], r["resolved"]
        );
        assert_eq!(r["wrong_side"], false, "{what}");
        assert!(
            r["exact"] == true || r["resolved"] == false,
            "a wrong count reported as resolved: {what}"
        );
        if r["resolved"] == false {
            let noted = r["notes"].as_array().unwrap().iter().any(|n| {
                n.as_str()
                    .unwrap_or("")
                    .contains("contact count not resolved")
            });
            assert!(noted, "no note says why: {what}");
        }
    }
}

#[test]
fn second_generator_seg_passes_dciodvfy_without_laterality_when_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_py(
        "cbct2.py",
        &["--seed", "0", "--out", dir.path().to_str().unwrap()],
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let src = dir.path().join("series");
    let seg_path = dir.path().join("electrode.dcm");
    let (ok, j) = support::segment_cli("cochlear", &src, &seg_path);
    assert!(ok && j["status"] == "ok", "{j}");
    // one ear in a small field: side unknown, label without a side
    assert_eq!(j["details"]["arrays"][0]["side"], "unknown", "{j}");
    assert_eq!(
        j["segments"][0]["label"],
        "Cochlear implant electrode array"
    );
    let errors = support::dciodvfy_errors(&seg_path);
    assert!(errors.is_empty(), "{}", support::dciodvfy_output(&seg_path));
    let v = load_series(&src, &LoadOptions::default()).unwrap();
    let seg = CochlearSegmenter::default().segment(&v).unwrap();
    let report = support::check_seg_with_highdicom(&seg_path, &src, &seg.labels);
    assert_eq!(report["ok"], true, "{report}");
    for s in report["segments"].as_array().unwrap() {
        assert!(s["modifier"].is_null(), "{s}");
    }
}
