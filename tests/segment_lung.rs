//! Lung segmentation against phantom ground truth, variant by variant: Dice ≥ 0.97 per lung, no gas or
//! airway voxel labelled lung, left lung at +x (LPS). Each phantom goes through the DICOM round trip
//! (written as a series, loaded back) so orientation, slice order and padding are exercised end to end.

mod support;

use segnode_imaging::segment::{Segmentation, Segmenter};
use segnode_imaging::volume::{load_series, LoadOptions, Volume};
use segnode_phantom::{class, generate, write_series, Spec, Variant};

struct Report {
    laa_percent: f64,
    dice_right: f64,
    dice_left: f64,
    airway_as_lung: usize,
    airway_total: usize,
    gas_as_lung: usize,
    gas_total: usize,
}

fn side_code(seg: &Segmentation, label: &str) -> Option<u8> {
    seg.segments
        .iter()
        .find(|s| s.description.label == label)
        .map(|s| s.number)
}

fn dice(seg: &Segmentation, truth: &ndarray::Array3<u8>, code: Option<u8>, cls: u8) -> f64 {
    let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&l, &t) in seg.labels.iter().zip(truth.iter()) {
        let x = code.is_some_and(|c| l == c);
        let y = t == cls;
        inter += (x && y) as usize;
        a += x as usize;
        b += y as usize;
    }
    if a + b == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (a + b) as f64
    }
}

/// Mean patient x of a label's voxels.
fn mean_x(v: &Volume, labels: &ndarray::Array3<u8>, code: u8) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for ((k, j, i), &l) in labels.indexed_iter() {
        if l == code && (k + j + i) % 5 == 0 {
            s += v.geometry.index_to_patient(k as f64, j as f64, i as f64)[0];
            n += 1;
        }
    }
    s / n.max(1) as f64
}

fn run_variant(variant: Variant) -> Report {
    run_spec(Spec::new(variant, 42, 256))
}

fn run_spec(spec: Spec) -> Report {
    let variant = spec.variant;
    let ph = generate(&spec);
    let dir = tempfile::tempdir().unwrap();
    write_series(&ph, dir.path()).unwrap();
    let v = load_series(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        v.shape(),
        [ph.hu.shape()[0], ph.hu.shape()[1], ph.hu.shape()[2]]
    );
    // the loaded grid is the generated grid (sorted along the normal, same origin)
    for a in 0..3 {
        assert!(
            (v.geometry.origin[a] - ph.geometry.origin[a]).abs() < 1e-3,
            "{variant:?} origin"
        );
    }
    let seg = segnode_imaging::segment::lung::LungSegmenter::default()
        .segment(&v)
        .unwrap();
    let right = side_code(&seg, "Right lung");
    let left = side_code(&seg, "Left lung");
    let truth = &ph.truth;
    let count = |cls: u8| truth.iter().filter(|&&t| t == cls).count();
    let as_lung = |cls: u8| {
        seg.labels
            .iter()
            .zip(truth.iter())
            .filter(|(l, t)| **t == cls && **l != 0)
            .count()
    };
    // measurements travel with the result: volumes close to the truth, LAA% reported
    let voxel_ml = v.geometry.voxel_volume_mm3() / 1000.0;
    let mut laa = 0.0;
    for s in &seg.segments {
        let m = |name: &str| {
            s.measurements
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.value)
                .unwrap()
        };
        let cls = if s.description.label == "Left lung" {
            class::LEFT_LUNG
        } else {
            class::RIGHT_LUNG
        };
        let truth_ml = count(cls) as f64 * voxel_ml;
        assert!(
            (m("volume") - truth_ml).abs() <= 0.05 * truth_ml + 1.0,
            "{variant:?} {}: {} mL vs truth {truth_ml} mL",
            s.description.label,
            m("volume")
        );
        assert!(
            (-1000.0..-500.0).contains(&m("mean_density")),
            "{variant:?}: mean HU {}",
            m("mean_density")
        );
        laa = f64::max(laa, m("laa950"));
    }
    // every SEG the tests write: dciodvfy clean, highdicom reads it back bit-exact
    if !seg.is_empty() {
        let out = tempfile::tempdir().unwrap();
        let path = support::write_seg_dciodvfy_clean(&v, &seg, out.path(), &format!("{variant:?}"));
        let report = support::check_seg_with_highdicom(&path, dir.path(), &seg.labels);
        assert_eq!(report["ok"], true, "{variant:?}: {report}");
    }
    let r = Report {
        laa_percent: laa,
        dice_right: dice(&seg, truth, right, class::RIGHT_LUNG),
        dice_left: dice(&seg, truth, left, class::LEFT_LUNG),
        airway_as_lung: as_lung(class::AIRWAY),
        airway_total: count(class::AIRWAY),
        gas_as_lung: as_lung(class::GAS),
        gas_total: count(class::GAS),
    };
    eprintln!(
        "DICE {:<11} right {:.4} left {:.4} | airway as lung {}/{} | gas as lung {}/{} | notes {:?}",
        variant.name(),
        r.dice_right,
        r.dice_left,
        r.airway_as_lung,
        r.airway_total,
        r.gas_as_lung,
        r.gas_total,
        seg.notes
    );
    // left lung at +x, right at -x
    if let (Some(l), Some(rt)) = (left, right) {
        assert!(
            mean_x(&v, &seg.labels, l) > 0.0 && mean_x(&v, &seg.labels, rt) < 0.0,
            "{variant:?}: sides swapped"
        );
    }
    r
}

fn check(variant: Variant) {
    let r = run_variant(variant);
    assert!(
        r.dice_right >= 0.97,
        "{variant:?}: right lung Dice {:.4}",
        r.dice_right
    );
    assert!(
        r.dice_left >= 0.97,
        "{variant:?}: left lung Dice {:.4}",
        r.dice_left
    );
    assert_eq!(
        r.gas_as_lung, 0,
        "{variant:?}: {} gas voxels labelled lung",
        r.gas_as_lung
    );
    assert_eq!(
        r.airway_as_lung, 0,
        "{variant:?}: {} airway voxels labelled lung",
        r.airway_as_lung
    );
}

#[test]
fn standard() {
    check(Variant::Standard);
}
#[test]
fn flipped_orientation_with_padding_value() {
    check(Variant::Flipped);
}
#[test]
fn feet_first() {
    check(Variant::FeetFirst);
}
#[test]
fn cropped_field_of_view() {
    check(Variant::Cropped);
}
#[test]
fn bases_only_with_large_stomach_gas() {
    check(Variant::Bases);
}
#[test]
fn apices_only() {
    check(Variant::Apices);
}
#[test]
fn fused_at_the_anterior_junction() {
    check(Variant::Fused);
}
#[test]
fn thin_slices() {
    check(Variant::Thin);
}
#[test]
fn thick_slices() {
    check(Variant::Thick);
}
#[test]
fn contrast() {
    check(Variant::Contrast);
}
#[test]
fn emphysema() {
    check(Variant::Emphysema);
}

#[test]
fn emphysema_index_rises_with_emphysema() {
    let normal = run_variant(Variant::Standard).laa_percent;
    let emph = run_variant(Variant::Emphysema).laa_percent;
    assert!(
        normal < 2.0 && emph > 5.0 && emph > 4.0 * normal,
        "LAA950 normal {normal:.2}% emphysema {emph:.2}%"
    );
}

#[test]
fn combined_traps_cropped_feet_first_fused_emphysema_with_contrast() {
    let mut spec = Spec::new(Variant::Cropped, 9, 256);
    spec.iop = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    spec.patient_position = "FFS";
    spec.number_from_feet = true;
    spec.anatomy.fused = true;
    spec.anatomy.emphysema = true;
    spec.anatomy.contrast = true;
    spec.slice_spacing = 1.25;
    spec.z_range = [100.0, 300.0];
    let r = run_spec(spec);
    assert!(
        r.dice_right >= 0.97 && r.dice_left >= 0.97,
        "Dice {:.4} / {:.4}",
        r.dice_right,
        r.dice_left
    );
    assert_eq!(r.airway_as_lung, 0);
    assert_eq!(r.gas_as_lung, 0);
}

#[test]
fn an_abdomen_below_the_lungs_gives_no_lung_not_garbage() {
    let mut spec = Spec::new(Variant::Bases, 3, 256);
    spec.z_range = [10.0, 100.0]; // stomach and bowel gas, no lung
    let ph = generate(&spec);
    assert_eq!(
        ph.truth
            .iter()
            .filter(|&&t| t == class::RIGHT_LUNG || t == class::LEFT_LUNG)
            .count(),
        0
    );
    assert!(ph.truth.iter().filter(|&&t| t == class::GAS).count() > 10_000);
    let dir = tempfile::tempdir().unwrap();
    write_series(&ph, dir.path()).unwrap();
    let v = load_series(dir.path(), &LoadOptions::default()).unwrap();
    let seg = segnode_imaging::segment::lung::LungSegmenter::default()
        .segment(&v)
        .unwrap();
    assert!(
        seg.is_empty(),
        "found {:?}",
        seg.segments
            .iter()
            .map(|s| &s.description.label)
            .collect::<Vec<_>>()
    );
    assert!(seg.labels.iter().all(|&l| l == 0));
    assert!(
        seg.notes.iter().any(|n| n.contains("no lung found")),
        "{:?}",
        seg.notes
    );
}

/// A synthetic volume where the two lungs are joined by a 40 mm thick bridge that erosion cannot part:
/// the split falls back to the body midline instead of calling it one lung.
#[test]
fn lungs_joined_too_widely_for_erosion_are_split_at_the_midline() {
    use segnode_imaging::volume::{geometry::Geometry, SeriesInfo, SliceRef};
    let (nk, nj, ni) = (40usize, 160usize, 160usize);
    let g = Geometry {
        origin: [-159.0, -159.0, 0.0],
        row_dir: [1.0, 0.0, 0.0],
        col_dir: [0.0, 1.0, 0.0],
        normal: [0.0, 0.0, 1.0],
        pixel_spacing: [2.0, 2.0],
        slice_spacing: 2.5,
    };
    let mut truth = ndarray::Array3::<u8>::zeros((nk, nj, ni));
    let hu = ndarray::Array3::from_shape_fn((nk, nj, ni), |(k, j, i)| {
        let p = g.index_to_patient(k as f64, j as f64, i as f64);
        let (x, y) = (p[0], p[1]);
        let body = (x / 140.0).powi(2) + (y / 100.0).powi(2) < 1.0;
        let lobe = |cx: f64| ((x - cx) / 35.0).powi(2) + (y / 55.0).powi(2) < 1.0;
        let lung = (5..35).contains(&k)
            && (lobe(-55.0) || lobe(55.0) || (x.abs() < 55.0 && y.abs() < 20.0));
        if lung {
            truth[[k, j, i]] = if x > 0.0 { 2 } else { 1 };
            -850i16
        } else if body {
            40
        } else {
            -1000
        }
    });
    let v = Volume {
        hu,
        geometry: g,
        slices: (0..nk)
            .map(|k| SliceRef {
                path: format!("s{k}").into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: format!("2.25.{k}"),
                frame_number: None,
                position: [-159.0, -159.0, 2.5 * k as f64],
            })
            .collect(),
        series: SeriesInfo::default(),
        out_of_field: None,
        dropped: vec![],
    };
    let seg = segnode_imaging::segment::lung::LungSegmenter::default()
        .segment(&v)
        .unwrap();
    assert!(
        seg.notes.iter().any(|n| n.contains("midline")),
        "{:?}",
        seg.notes
    );
    let right = side_code(&seg, "Right lung");
    let left = side_code(&seg, "Left lung");
    let (dr, dl) = (dice(&seg, &truth, right, 1), dice(&seg, &truth, left, 2));
    assert!(dr > 0.95 && dl > 0.95, "Dice {dr:.4} / {dl:.4}");
}
