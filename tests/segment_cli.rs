//! `segnode segment` end to end on the shared real CT data: JSON summary, SEG written (or not).

mod support;

use segnode_imaging::result::{ResultOptions, SegObject};
use segnode_imaging::segment::Segmenter;
use segnode_imaging::volume::{load_series, LoadOptions};

#[test]
fn chest_crop_both_lungs_plausible_volumes_left_at_plus_x() {
    let src = support::shared_data("chest-ct-crop");
    let dir = tempfile::tempdir().unwrap();
    let seg_path = dir.path().join("lungs.dcm");
    let (ok, j) = support::segment_cli("lung", &src, &seg_path);
    assert!(ok, "{j}");
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["slices"], 112);
    assert_eq!(
        j["series_uid"],
        "2.25.15569976423500338741417523599259304704"
    );
    for key in ["load_ms", "segment_ms", "write_ms"] {
        assert!(j[key].as_f64().is_some(), "{key} missing: {j}");
    }
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{j}");
    for s in segs {
        // the crop holds the central part of each lung: several hundred mL, not litres of outside air
        let ml = s["volume_ml"].as_f64().unwrap();
        assert!((300.0..2500.0).contains(&ml), "{}: {ml} mL", s["label"]);
        let hu = s["mean_density_hu"].as_f64().unwrap();
        assert!(
            (-900.0..-600.0).contains(&hu),
            "{}: mean {hu} HU",
            s["label"]
        );
    }
    assert!(seg_path.exists());

    // in process: left lung at +x, the SEG on disk is valid and reads back bit-exact
    let v = load_series(&src, &LoadOptions::default()).unwrap();
    let seg = segnode_imaging::segment::lung::LungSegmenter::default()
        .segment(&v)
        .unwrap();
    let centroid_x = |number: u8| {
        let (mut s, mut n) = (0.0, 0usize);
        for ((k, jj, i), &l) in seg.labels.indexed_iter() {
            if l == number {
                s += v.geometry.index_to_patient(k as f64, jj as f64, i as f64)[0];
                n += 1;
            }
        }
        s / n as f64
    };
    let left = seg
        .segments
        .iter()
        .find(|s| s.description.label == "Left lung")
        .unwrap()
        .number;
    let right = seg
        .segments
        .iter()
        .find(|s| s.description.label == "Right lung")
        .unwrap()
        .number;
    assert!(
        centroid_x(left) > centroid_x(right) + 50.0,
        "left {} right {}",
        centroid_x(left),
        centroid_x(right)
    );
    assert!(centroid_x(left) > 0.0 || centroid_x(right) < 0.0);

    let errors = support::dciodvfy_errors(&seg_path);
    assert!(errors.is_empty(), "{}", support::dciodvfy_output(&seg_path));
    let obj = SegObject::build(&v, &seg, &ResultOptions::default()).unwrap();
    let again = dir.path().join("again.dcm");
    obj.write(&again).unwrap();
    let report = support::check_seg_with_highdicom(&again, &src, &seg.labels);
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn jpeg2000_pelvis_decodes_and_has_no_lung() {
    let dir = tempfile::tempdir().unwrap();
    let seg_path = dir.path().join("none.dcm");
    let (ok, j) = support::segment_cli("lung", &support::shared_data("ct-jpeg2000"), &seg_path);
    assert!(ok, "{j}");
    assert_eq!(j["status"], "no lung found", "{j}");
    assert_eq!(j["slices"], 20);
    assert!(j["segments"].as_array().unwrap().is_empty());
    assert!(j["output"].is_null());
    assert!(
        !seg_path.exists(),
        "no SEG must be written when no lung is found"
    );
}

#[test]
fn refused_series_gives_an_error_line_and_a_failing_status() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), "nothing").unwrap();
    let (ok, j) = support::segment_cli("lung", dir.path(), &dir.path().join("o.dcm"));
    assert!(!ok);
    assert_eq!(j["status"], "error");
    assert!(
        j["error"].as_str().unwrap().contains("no usable CT slices"),
        "{j}"
    );
}

#[test]
fn phantom_command_writes_a_series_that_segment_reads() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("ph");
    let truth = dir.path().join("truth.raw");
    let mut args: Vec<std::ffi::OsString> = [
        "--kind",
        "chest",
        "--variant",
        "flipped",
        "--matrix",
        "128",
        "--slices",
        "60",
        "--slice-spacing",
        "4",
        "--seed",
        "7",
    ]
    .iter()
    .map(|a| a.into())
    .collect();
    args.extend(["--out".into(), series.as_os_str().to_owned()]);
    args.extend(["--truth".into(), truth.as_os_str().to_owned()]);
    let j = support::phantom_cli(&args);

    assert_eq!(j["shape"], serde_json::json!([60, 128, 128]));
    assert_eq!(std::fs::metadata(&truth).unwrap().len(), 60 * 128 * 128);
    let (ok, s) = support::segment_cli("lung", &series, &dir.path().join("seg.dcm"));
    assert!(ok, "{s}");
    assert_eq!(s["status"], "ok", "{s}");
    assert_eq!(s["segments"].as_array().unwrap().len(), 2, "{s}");
}
