//! Multi-frame sources end to end: phantoms written as ONE X-Ray 3D Craniofacial or Enhanced CT object
//! pass dciodvfy; they load into the same volume as the single-frame export of the same phantom (native,
//! RLE, JPEG Lossless and JPEG 2000 pixel data); the `cochlear` and `lung` pipelines give the same results on them;
//! the SEG names each source frame (ReferencedFrameNumber), passes dciodvfy and reads back in highdicom;
//! the example routing rules pick the same pipelines for them.

mod support;

use segnode_imaging::segment::{Segmentation, Segmenter};
use segnode_imaging::volume::{load_series, LoadOptions, Volume};
use segnode_phantom::cbct::{generate_cbct, CbctSpec, CbctVariant};
use segnode_phantom::{
    class, generate, write_cbct_multiframe, write_cbct_series, write_series,
    write_series_multiframe, MultiFrame, Spec, Variant,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The single multi-frame file a writer put in `dir`.
fn only_file(dir: &Path) -> std::path::PathBuf {
    let files = support::files_under(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn assert_dciodvfy_clean(path: &Path) {
    let errors = support::dciodvfy_errors(path);
    assert!(
        errors.is_empty(),
        "{}: {}",
        path.display(),
        support::dciodvfy_output(path)
    );
}

/// Same voxels, same geometry, same positions; the multi-frame volume's slices are frames of one
/// instance.
fn assert_same_volume(single: &Volume, multi: &Volume) {
    assert_eq!(single.shape(), multi.shape());
    assert!(single.hu == multi.hu, "HU differ");
    assert_eq!(single.out_of_field, multi.out_of_field);
    let (a, b) = (&single.geometry, &multi.geometry);
    for n in 0..3 {
        assert!((a.origin[n] - b.origin[n]).abs() < 1e-6, "{a:?} vs {b:?}");
        assert!((a.normal[n] - b.normal[n]).abs() < 1e-9, "{a:?} vs {b:?}");
    }
    assert!((a.slice_spacing - b.slice_spacing).abs() < 1e-6);
    assert_eq!(a.pixel_spacing, b.pixel_spacing);
    assert_eq!(
        single.series.series_instance_uid,
        multi.series.series_instance_uid
    );
    assert_eq!(single.series.slice_thickness, multi.series.slice_thickness);
    let uid = &multi.slices[0].sop_instance_uid;
    let mut frames = Vec::new();
    for (s, m) in single.slices.iter().zip(&multi.slices) {
        assert_eq!(s.frame_number, None);
        assert_eq!(&m.sop_instance_uid, uid);
        for n in 0..3 {
            assert!((s.position[n] - m.position[n]).abs() < 1e-6);
        }
        frames.push(m.frame_number.expect("frame number of a multi-frame slice"));
    }
    frames.sort_unstable();
    assert_eq!(frames, (1..=multi.slices.len() as u32).collect::<Vec<_>>());
}

#[test]
fn multiframe_phantoms_pass_dciodvfy() {
    let dir = tempfile::tempdir().unwrap();
    let chest = generate(&Spec::new(Variant::Flipped, 42, 96));
    let cbct = generate_cbct(&CbctSpec::new(CbctVariant::CoronalLeft, 11));
    for kind in [MultiFrame::EnhancedCt, MultiFrame::XRay3d] {
        let d = dir.path().join(format!("chest-{}", kind.name()));
        write_series_multiframe(&chest, &d, kind).unwrap();
        assert_dciodvfy_clean(&only_file(&d));
        let d = dir.path().join(format!("cbct-{}", kind.name()));
        let w = write_cbct_multiframe(&cbct, &d, kind).unwrap();
        assert_eq!(w.files.len(), 1);
        assert_dciodvfy_clean(&w.files[0]);
        // the SOP class on disk is the one asked for
        let out = support::run_with_timeout(
            Command::new("dcmdump")
                .args(["+P", "0008,0016"])
                .arg(&w.files[0]),
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let want = match kind {
            MultiFrame::EnhancedCt => "EnhancedCTImageStorage",
            MultiFrame::XRay3d => "XRay3DCraniofacialImageStorage",
        };
        assert!(text.contains(want), "{text}");
    }
}

#[test]
fn multiframe_loads_into_the_same_volume_as_the_slices() {
    let dir = tempfile::tempdir().unwrap();
    // signed pixels with a padding value and a 180° rotated image; feet first with unsigned pixels
    for variant in [Variant::Flipped, Variant::FeetFirst] {
        let ph = generate(&Spec::new(variant, 42, 64));
        let (sf, mf) = (
            dir.path().join(format!("{}-sf", variant.name())),
            dir.path().join(format!("{}-mf", variant.name())),
        );
        write_series(&ph, &sf).unwrap();
        write_series_multiframe(&ph, &mf, MultiFrame::EnhancedCt).unwrap();
        let single = load_series(&sf, &LoadOptions::default()).unwrap();
        let multi = load_series(&mf, &LoadOptions::default()).unwrap();
        assert_same_volume(&single, &multi);
        if variant == Variant::Flipped {
            assert!(multi.out_of_field.is_some(), "padding value not honoured");
        }
    }

    // X-Ray 3D CBCT: native, then re-encoded by DCMTK as RLE and JPEG Lossless, and by Pillow as
    // JPEG 2000 (one codestream per frame, decoded frame by frame)
    let ph = generate_cbct(&CbctSpec::new(CbctVariant::CoronalLeft, 11));
    let (sf, mf) = (dir.path().join("cbct-sf"), dir.path().join("cbct-mf"));
    write_cbct_series(&ph, &sf).unwrap();
    let w = write_cbct_multiframe(&ph, &mf, MultiFrame::XRay3d).unwrap();
    let single = load_series(&sf, &LoadOptions::default()).unwrap();
    assert_same_volume(&single, &load_series(&mf, &LoadOptions::default()).unwrap());
    for (tool, args, ts) in [
        ("dcmcrle", vec![], "RLELossless"),
        ("dcmcjpeg", vec!["+e1"], "JPEGLossless"),
    ] {
        let d = dir.path().join(tool);
        std::fs::create_dir_all(&d).unwrap();
        let out_file = d.join("x.dcm");
        let out = support::run_with_timeout(
            Command::new(tool)
                .args(&args)
                .arg(&w.files[0])
                .arg(&out_file),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{tool}: {out:?}");
        let dump = support::run_with_timeout(
            Command::new("dcmdump")
                .args(["+P", "0002,0010"])
                .arg(&out_file),
            Duration::from_secs(30),
        );
        assert!(
            String::from_utf8_lossy(&dump.stdout).contains(ts),
            "{tool} did not write {ts}"
        );
        let v = load_series(&d, &LoadOptions::default()).unwrap();
        assert_same_volume(&single, &v);
    }
    let d = dir.path().join("j2k");
    std::fs::create_dir_all(&d).unwrap();
    let out = support::run_py(
        "encapsulate_j2k.py",
        &[
            w.files[0].to_str().unwrap(),
            d.join("x.dcm").to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{out:?}");
    let dump = support::run_with_timeout(
        Command::new("dcmdump")
            .args(["+P", "0002,0010"])
            .arg(d.join("x.dcm")),
        Duration::from_secs(30),
    );
    assert!(String::from_utf8_lossy(&dump.stdout).contains("JPEG2000LosslessOnly"));
    assert_same_volume(&single, &load_series(&d, &LoadOptions::default()).unwrap());
}

/// `segnode segment --pipeline cochlear` on both exports of one phantom; returns (single, multi) JSON.
fn cochlear_both(
    variant: CbctVariant,
    kind: MultiFrame,
    dir: &Path,
) -> (serde_json::Value, serde_json::Value) {
    let ph = generate_cbct(&CbctSpec::new(variant, 11));
    let (sf, mf) = (dir.join("sf"), dir.join("mf"));
    write_cbct_series(&ph, &sf).unwrap();
    write_cbct_multiframe(&ph, &mf, kind).unwrap();
    let (ok, single) = support::segment_cli("cochlear", &sf, &dir.join("sf.seg.dcm"));
    assert!(ok && single["status"] == "ok", "{single}");
    let seg_path = dir.join("mf.seg.dcm");
    let (ok, multi) = support::segment_cli("cochlear", &mf, &seg_path);
    assert!(ok && multi["status"] == "ok", "{multi}");
    assert_eq!(multi["slices"], single["slices"]);

    // same arrays, same contacts (the volumes are the same)
    let arrays = |j: &serde_json::Value| j["details"]["arrays"].as_array().unwrap().clone();
    let (a, b) = (arrays(&single), arrays(&multi));
    assert_eq!(a.len(), ph.arrays.len(), "{single}");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["side"], y["side"]);
        assert_eq!(x["contact_count"], y["contact_count"]);
        assert_eq!(x["contacts_mm"], y["contacts_mm"]);
        assert_eq!(x["insertion_depth"], y["insertion_depth"]);
        let placed = ph
            .arrays
            .iter()
            .find(|p| ph.arrays.len() == 1 || (p.side == 1) == (x["side"] == "left"))
            .unwrap();
        assert_eq!(
            y["contact_count"].as_u64().unwrap() as usize,
            placed.contacts.len(),
            "{y}"
        );
    }

    // the SEG on the multi-frame source: valid, bit-exact in highdicom, every frame names its source frame
    assert_dciodvfy_clean(&seg_path);
    let v = load_series(&mf, &LoadOptions::default()).unwrap();
    let seg = segnode_imaging::segment::cochlear::CochlearSegmenter::default()
        .segment(&v)
        .unwrap();
    let report = support::check_seg_with_highdicom(&seg_path, &mf, &seg.labels);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["frames"].as_u64().unwrap() > 0);
    assert_eq!(
        report["frames_with_referenced_frame_number"], report["frames"],
        "{report}"
    );
    (single, multi)
}

#[test]
fn cochlear_on_xray3d_cbct_finds_the_same_contacts_as_on_slices() {
    let dir = tempfile::tempdir().unwrap();
    let (single, multi) = cochlear_both(CbctVariant::CoronalRight, MultiFrame::XRay3d, dir.path());
    let a = &multi["details"]["arrays"][0];
    eprintln!(
        "coronal-right X-Ray 3D: {} array(s), {} contacts (slices: {})",
        multi["details"]["arrays"].as_array().unwrap().len(),
        a["contact_count"],
        single["details"]["arrays"][0]["contact_count"]
    );
}

#[test]
fn cochlear_on_enhanced_ct_bilateral_finds_both_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let (_, multi) = cochlear_both(CbctVariant::AxialBoth, MultiFrame::EnhancedCt, dir.path());
    assert_eq!(multi["segments"].as_array().unwrap().len(), 2, "{multi}");
}

fn dice(seg: &Segmentation, truth: &ndarray::Array3<u8>, label: &str, cls: u8) -> f64 {
    let code = seg
        .segments
        .iter()
        .find(|s| s.description.label == label)
        .map(|s| s.number);
    let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&l, &t) in seg.labels.iter().zip(truth.iter()) {
        let x = code.is_some_and(|c| l == c);
        let y = t == cls;
        inter += (x && y) as usize;
        a += x as usize;
        b += y as usize;
    }
    2.0 * inter as f64 / (a + b).max(1) as f64
}

#[test]
fn lung_on_enhanced_ct_chest_is_as_good_as_on_slices() {
    let dir = tempfile::tempdir().unwrap();
    let ph = generate(&Spec::new(Variant::Standard, 42, 256));
    let (sf, mf) = (dir.path().join("sf"), dir.path().join("mf"));
    write_series(&ph, &sf).unwrap();
    write_series_multiframe(&ph, &mf, MultiFrame::EnhancedCt).unwrap();

    let seg_path = dir.path().join("lungs.dcm");
    let (ok, j) = support::segment_cli("lung", &mf, &seg_path);
    assert!(ok && j["status"] == "ok", "{j}");
    assert_eq!(j["slices"].as_u64().unwrap() as usize, ph.hu.shape()[0]);
    let (ok, js) = support::segment_cli("lung", &sf, &dir.path().join("sf.dcm"));
    assert!(ok && js["status"] == "ok", "{js}");
    for (a, b) in j["segments"]
        .as_array()
        .unwrap()
        .iter()
        .zip(js["segments"].as_array().unwrap())
    {
        assert_eq!(a["label"], b["label"]);
        assert_eq!(a["volume_ml"], b["volume_ml"]);
    }

    // Dice against the truth, in process on both loads (the CLI's SEG is checked to hold these labels)
    let lungs = |d: &Path| {
        let v = load_series(d, &LoadOptions::default()).unwrap();
        segnode_imaging::segment::lung::LungSegmenter::default()
            .segment(&v)
            .unwrap()
    };
    let (s_seg, m_seg) = (lungs(&sf), lungs(&mf));
    let scores = |seg: &Segmentation| {
        (
            dice(seg, &ph.truth, "Right lung", class::RIGHT_LUNG),
            dice(seg, &ph.truth, "Left lung", class::LEFT_LUNG),
        )
    };
    let (s_dice, m_dice) = (scores(&s_seg), scores(&m_seg));
    eprintln!("lung Dice right / left: slices {s_dice:.4?}, Enhanced CT {m_dice:.4?}");
    assert!(
        m_dice.0 >= s_dice.0 && m_dice.1 >= s_dice.1,
        "{m_dice:?} < {s_dice:?}"
    );
    assert!(m_dice.0 >= 0.97 && m_dice.1 >= 0.97, "{m_dice:?}");

    assert_dciodvfy_clean(&seg_path);
    let report = support::check_seg_with_highdicom(&seg_path, &mf, &m_seg.labels);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["frames_with_referenced_frame_number"], report["frames"],
        "{report}"
    );
}

/// `segnode --config config/examples/routing.toml rules test DIR`.
fn rules_test(dir: &Path) -> String {
    let out = support::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_segnode"))
            .current_dir(support::repo_root())
            .args(["--config", "config/examples/routing.toml", "rules", "test"])
            .arg(dir),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn example_routing_sends_multiframe_coronal_cbct_to_cochlear_and_chest_to_lung() {
    let dir = tempfile::tempdir().unwrap();
    let cbct = generate_cbct(&CbctSpec::new(CbctVariant::CoronalLeft, 11));
    for kind in [MultiFrame::XRay3d, MultiFrame::EnhancedCt] {
        let d = dir.path().join(kind.name());
        let w = write_cbct_multiframe(&cbct, &d, kind).unwrap();
        // the indexed header takes orientation, spacing and thickness from the shared groups
        let h = segnode::store::header::read_header(&w.files[0]).unwrap();
        assert_eq!(h.iop, Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]));
        assert_eq!(h.pixel_spacing, Some([0.3, 0.3]));
        assert_eq!(h.slice_thickness, Some(0.3));
        assert_eq!(h.number_of_frames, Some(cbct.hu.shape()[0] as i64));
        let text = rules_test(&d);
        assert!(
            text.contains("rule cbct-cochlear → pipelines cochlear"),
            "{text}"
        );
        assert!(!text.contains("chest-ct-lungs"), "{text}");
    }
    // an axial Enhanced CT chest: one instance, but its frames count as slices for min_slices = 40
    let d = dir.path().join("chest");
    write_series_multiframe(
        &generate(&Spec::new(Variant::Standard, 42, 64)),
        &d,
        MultiFrame::EnhancedCt,
    )
    .unwrap();
    let text = rules_test(&d);
    assert!(
        text.contains("rule chest-ct-lungs → pipelines lung"),
        "{text}"
    );
    assert!(text.contains("1 instances (117 frames)"), "{text}");
}
