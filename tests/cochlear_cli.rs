//! `segnode segment --pipeline cochlear` end to end: CBCT phantoms written as DICOM (axial and coronal),
//! the JSON line with the contact list, the SEG (one coded segment per side) valid for dciodvfy and read
//! back bit-exact by highdicom; the real chest CT of the shared data holds no electrode.

mod support;

use segnode_imaging::segment::cochlear::CochlearSegmenter;
use segnode_imaging::segment::Segmenter;
use segnode_imaging::volume::{load_series, LoadOptions};
use segnode_phantom::cbct::{generate_cbct, CbctSpec, CbctVariant};
use segnode_phantom::write_cbct_series;

/// Phantom → DICOM → CLI → SEG checks; returns the CLI's JSON.
fn seg_round_trip(variant: CbctVariant) -> serde_json::Value {
    let ph = generate_cbct(&CbctSpec::new(variant, 11));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("series");
    write_cbct_series(&ph, &src).unwrap();
    let seg_path = dir.path().join("electrodes.dcm");
    let (ok, j) = support::segment_cli("cochlear", &src, &seg_path);
    assert!(ok, "{j}");
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["pipeline"], "cochlear");
    let arrays = j["details"]["arrays"]
        .as_array()
        .expect("contact list in the JSON");
    assert_eq!(arrays.len(), ph.arrays.len(), "{j}");
    for placed in &ph.arrays {
        let side = if placed.side == 1 { "left" } else { "right" };
        // issue 11: a single array's side is `unknown` unless the image tells it (never the wrong side)
        let a = arrays
            .iter()
            .find(|a| a["side"] == side)
            .or_else(|| (ph.arrays.len() == 1).then(|| &arrays[0]))
            .unwrap_or_else(|| panic!("no {side} array in {j}"));
        assert!(a["side"] == side || a["side"] == "unknown", "{a}");
        assert_eq!(
            a["contact_count"].as_u64().unwrap() as usize,
            placed.contacts.len(),
            "{a}"
        );
        assert_eq!(
            a["contacts_mm"].as_array().unwrap().len(),
            placed.contacts.len()
        );
        assert_eq!(a["order"], "apical tip first");
        // the first generator's arrays are resolved on its grids: the count is not flagged
        assert_eq!(a["contact_count_resolved"], true, "{a}");
        // the tip contact is the phantom's apical one
        let tip: Vec<f64> = a["contacts_mm"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let t = placed.contacts[0];
        let d =
            ((tip[0] - t[0]).powi(2) + (tip[1] - t[1]).powi(2) + (tip[2] - t[2]).powi(2)).sqrt();
        assert!(d < 0.3, "tip {tip:?} vs {t:?}");
        assert!(
            a["insertion_depth"]["kind"] == "angle" || a["insertion_depth"]["kind"] == "length",
            "{a}"
        );
    }
    let segs = j["segments"].as_array().unwrap();
    for s in segs {
        assert!(s["contacts_count"].as_f64().unwrap() >= 12.0, "{s}");
        assert!(s["array_length_mm"].as_f64().unwrap() > 5.0, "{s}");
    }
    assert!(seg_path.exists());
    let errors = support::dciodvfy_errors(&seg_path);
    assert!(errors.is_empty(), "{}", support::dciodvfy_output(&seg_path));

    // the same segmentation in process (deterministic) is what the SEG holds, bit for bit
    let v = load_series(&src, &LoadOptions::default()).unwrap();
    let seg = CochlearSegmenter::default().segment(&v).unwrap();
    let report = support::check_seg_with_highdicom(&seg_path, &src, &seg.labels);
    assert_eq!(report["ok"], true, "{report}");
    for s in report["segments"].as_array().unwrap() {
        assert_eq!(s["type"], "43252007", "{s}");
        assert_eq!(s["scheme"], "SCT", "{s}");
        assert_eq!(s["category"], "260787004", "{s}");
        let label = s["label"].as_str().unwrap();
        // the laterality modifier only where the side is known (issue 11)
        if label.starts_with("Left") {
            assert_eq!(s["modifier"], "7771000", "{s}");
        } else if label.starts_with("Right") {
            assert_eq!(s["modifier"], "24028007", "{s}");
        } else {
            assert!(s["modifier"].is_null(), "{s}");
        }
    }
    j
}

#[test]
fn axial_bilateral_seg_passes_dciodvfy_and_reads_back_bit_exact() {
    let j = seg_round_trip(CbctVariant::AxialBoth);
    let labels: Vec<&str> = j["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "Right cochlear implant electrode array",
            "Left cochlear implant electrode array"
        ]
    );
}

#[test]
fn coronal_cbct_seg_passes_dciodvfy_and_reads_back_bit_exact() {
    let j = seg_round_trip(CbctVariant::CoronalLeft);
    assert_eq!(j["segments"].as_array().unwrap().len(), 1);
    // one ear in a small field: the side is not told by the image, so no laterality (issue 11)
    assert_eq!(
        j["segments"][0]["label"], "Cochlear implant electrode array",
        "{j}"
    );
}

#[test]
fn chest_ct_has_no_electrode_and_no_seg() {
    let dir = tempfile::tempdir().unwrap();
    let seg_path = dir.path().join("none.dcm");
    let (ok, j) = support::segment_cli(
        "cochlear",
        &support::shared_data("chest-ct-crop"),
        &seg_path,
    );
    assert!(ok, "{j}");
    assert_eq!(j["status"], "no electrode found", "{j}");
    assert_eq!(j["slices"], 112);
    assert!(j["segments"].as_array().unwrap().is_empty());
    assert!(j["output"].is_null());
    assert!(!seg_path.exists(), "no SEG when no electrode is found");
}
