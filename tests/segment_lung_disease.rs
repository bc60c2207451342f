//! Issue 19: lung masks that keep dense disease inside and pleural effusion out, graded on phantoms whose
//! pathology comes from anatomy (lobes, pleura, gravity; `segnode_phantom::Disease`), not from how the
//! segmenter looks for it.
//!
//! - Masses (juxtapleural 30–80 mm, right hilar 30–50 mm, left hilar against the heart 30–60 mm) and a
//!   collapsed lower lobe, at 1.25–5 mm slices: ≥ 95 % of the lesion covered by the lung mask of its
//!   side; a consolidated right lower lobe ≥ 95 % at 1.25 mm (94.9 % at 5 mm: the floor test holds
//!   94.5 %). Not met yet (floors against regression): a consolidated medial basal segment alone (~60 %),
//!   and a consolidated left lower lobe takes in part of the heart (Dice ~0.94).
//! - Effusion (left, right): ≤ 5 % of the fluid inside any lung mask; when reported, the effusion segment
//!   (SCT 60046008) has a volume close to the truth.
//! - Lung Dice against the lung truth (lesions included) stays high, the SEG passes dciodvfy.
//!
//! Each run prints a `COVER` / `EFFUSION` line; the closing note of issue 19 quotes them.

mod support;

use segnode_imaging::segment::{Segmentation, Segmenter};
use segnode_imaging::volume::{load_series, LoadOptions};
use segnode_phantom::{class, generate, write_series, Disease, Spec, Variant};

struct Outcome {
    /// Share of the lesion voxels inside the lung mask of the lesion's side.
    cover: f64,
    lesion_ml: f64,
    /// Share of the effusion voxels inside any lung mask.
    effusion_inside: f64,
    effusion_ml: f64,
    /// Volume of the reported effusion segment (mL), if any.
    effusion_reported_ml: Option<f64>,
    dice: [f64; 2],
}

fn code_of(seg: &Segmentation, label: &str) -> Option<u8> {
    seg.segments
        .iter()
        .find(|s| s.description.label == label)
        .map(|s| s.number)
}

fn run(spec: Spec, tag: &str) -> Outcome {
    let ph = generate(&spec);
    let dir = tempfile::tempdir().unwrap();
    write_series(&ph, dir.path()).unwrap();
    let v = load_series(dir.path(), &LoadOptions::default()).unwrap();
    let t0 = std::time::Instant::now();
    let seg = segnode_imaging::segment::lung::LungSegmenter::default()
        .segment(&v)
        .unwrap();
    let ms = t0.elapsed().as_millis();
    let right = code_of(&seg, "Right lung");
    let left = code_of(&seg, "Left lung");
    let eff = seg
        .segments
        .iter()
        .find(|s| s.description.label.ends_with("pleural effusion"))
        .map(|s| s.number);
    let voxel_ml = v.geometry.voxel_volume_mm3() / 1000.0;
    let side = spec.anatomy.disease.map(|d| d.side()).unwrap_or(0);
    let lesion_cls = if side == 0 {
        class::RIGHT_LESION
    } else {
        class::LEFT_LESION
    };
    let side_code = if side == 0 { right } else { left };
    let (mut les, mut les_in, mut fl, mut fl_in) = (0usize, 0usize, 0usize, 0usize);
    let mut dice_acc = [[0usize; 3]; 2];
    for (&l, &t) in seg.labels.iter().zip(ph.truth.iter()) {
        let is_lung = l != 0 && (Some(l) == right || Some(l) == left);
        if t == lesion_cls {
            les += 1;
            les_in += (side_code == Some(l)) as usize;
        }
        if t == class::EFFUSION {
            fl += 1;
            fl_in += is_lung as usize;
        }
        for (n, (code, cls)) in [
            (right, [class::RIGHT_LUNG, class::RIGHT_LESION]),
            (left, [class::LEFT_LUNG, class::LEFT_LESION]),
        ]
        .iter()
        .enumerate()
        {
            let a = code.is_some_and(|c| c == l);
            let b = cls.contains(&t);
            dice_acc[n][0] += (a && b) as usize;
            dice_acc[n][1] += a as usize;
            dice_acc[n][2] += b as usize;
        }
    }
    if let Some(dump) = std::env::var_os("LUNGDZ_DUMP") {
        // raw arrays for offline inspection: labels, truth, hu (uint8, uint8, int16; C order k, j, i)
        let base = std::path::Path::new(&dump).join(tag.replace([' ', ',', '/'], "_"));
        std::fs::write(
            base.with_extension("labels"),
            seg.labels.as_slice().unwrap(),
        )
        .unwrap();
        std::fs::write(base.with_extension("truth"), ph.truth.as_slice().unwrap()).unwrap();
        let hu: Vec<u8> = v.hu.iter().flat_map(|h| h.to_le_bytes()).collect();
        std::fs::write(base.with_extension("hu"), hu).unwrap();
        let s = v.hu.shape();
        std::fs::write(
            base.with_extension("shape"),
            format!("{} {} {}", s[0], s[1], s[2]),
        )
        .unwrap();
    }
    if std::env::var_os("LUNGDZ_DEBUG").is_some() {
        // where the errors are: false lung (by truth class) and missed lesion, as patient-space boxes
        let mut fp: std::collections::BTreeMap<(u8, u8), (usize, [f64; 3], [f64; 3], [f64; 3])> =
            Default::default();
        for ((k, j, i), &l) in seg.labels.indexed_iter() {
            let t = ph.truth[[k, j, i]];
            let lungside = if Some(l) == right {
                1
            } else if Some(l) == left {
                2
            } else {
                0
            };
            let truthside = match t {
                class::RIGHT_LUNG | class::RIGHT_LESION => 1,
                class::LEFT_LUNG | class::LEFT_LESION => 2,
                _ => 0,
            };
            let key = if lungside != 0 && lungside != truthside {
                (lungside, t) // false lung
            } else if t == lesion_cls && lungside == 0 {
                (9, t) // missed lesion
            } else {
                continue;
            };
            let p = v.geometry.index_to_patient(k as f64, j as f64, i as f64);
            let e = fp
                .entry(key)
                .or_insert((0, [0.0; 3], [f64::MAX; 3], [f64::MIN; 3]));
            e.0 += 1;
            for a in 0..3 {
                e.1[a] += p[a];
                e.2[a] = e.2[a].min(p[a]);
                e.3[a] = e.3[a].max(p[a]);
            }
        }
        for ((side, t), (n, s, lo, hi)) in fp {
            eprintln!(
                "  ERR {tag} {} truth {t}: {:.1} mL centre {:?} box {:?}..{:?}",
                if side == 9 {
                    "missed"
                } else if side == 1 {
                    "R"
                } else {
                    "L"
                },
                n as f64 * voxel_ml,
                s.map(|x| (x / n as f64).round()),
                lo.map(|x| x.round()),
                hi.map(|x| x.round())
            );
        }
    }
    let dice = dice_acc.map(|d| 2.0 * d[0] as f64 / (d[1] + d[2]).max(1) as f64);
    let effusion_reported_ml = eff.and_then(|c| {
        seg.segment(c).and_then(|s| {
            s.measurements
                .iter()
                .find(|m| m.name == "volume")
                .map(|m| m.value)
        })
    });
    let o = Outcome {
        cover: les_in as f64 / les.max(1) as f64,
        lesion_ml: les as f64 * voxel_ml,
        effusion_inside: fl_in as f64 / fl.max(1) as f64,
        effusion_ml: fl as f64 * voxel_ml,
        effusion_reported_ml,
        dice,
    };
    if les > 0 {
        eprintln!(
            "COVER {tag:<34} lesion {:7.1} mL covered {:6.2} % | Dice R {:.4} L {:.4} | {ms} ms | {:?}",
            o.lesion_ml,
            100.0 * o.cover,
            dice[0],
            dice[1],
            seg.notes
        );
    }
    if fl > 0 {
        eprintln!(
            "EFFUSION {tag:<31} fluid {:7.1} mL inside lung {:5.2} % reported {:?} mL | Dice R {:.4} L {:.4} | {ms} ms | {:?}",
            o.effusion_ml,
            100.0 * o.effusion_inside,
            o.effusion_reported_ml.map(|v| (v * 10.0).round() / 10.0),
            dice[0],
            dice[1],
            seg.notes
        );
    }
    // every SEG these tests write: dciodvfy clean
    if !seg.is_empty() {
        let out = tempfile::tempdir().unwrap();
        let path = support::write_seg_dciodvfy_clean(&v, &seg, out.path(), tag);
        if effusion_reported_ml.is_some() {
            // a SEG with the effusion segment reads back bit-exact in highdicom
            let report = support::check_seg_with_highdicom(&path, dir.path(), &seg.labels);
            assert_eq!(report["ok"], true, "{tag}: {report}");
        }
    }
    o
}

fn spec(variant: Variant, slice_mm: f64) -> Spec {
    let mut s = Spec::new(variant, 42, 256);
    s.slice_spacing = slice_mm;
    s.noise_sd = if slice_mm >= 3.0 { 12.0 } else { 20.0 };
    s
}

fn with_disease(variant: Variant, slice_mm: f64, d: Disease) -> Spec {
    let mut s = spec(variant, slice_mm);
    s.anatomy.disease = Some(d);
    s
}

fn check_cover(s: Spec, tag: &str) {
    let o = run(s, tag);
    assert!(
        o.cover >= 0.95,
        "{tag}: {:.1} % of a {:.1} mL lesion covered",
        100.0 * o.cover,
        o.lesion_ml
    );
    assert!(
        o.dice[0] >= 0.95 && o.dice[1] >= 0.95,
        "{tag}: Dice {:?}",
        o.dice
    );
}

#[test]
fn juxtapleural_masses_by_size_and_slice_thickness() {
    for (d, slice) in [(30.0, 2.5), (60.0, 1.25), (60.0, 5.0), (80.0, 2.5)] {
        let s = with_disease(
            Variant::JuxtapleuralMass,
            slice,
            Disease::JuxtapleuralMass {
                side: 1,
                diameter_mm: d,
                hu: 8.0,
            },
        );
        check_cover(s, &format!("juxtapleural {d} mm, {slice} mm slices"));
    }
}

#[test]
fn juxtapleural_mass_right_side_dense() {
    let s = with_disease(
        Variant::JuxtapleuralMass,
        2.5,
        Disease::JuxtapleuralMass {
            side: 0,
            diameter_mm: 50.0,
            hu: 40.0,
        },
    );
    check_cover(s, "juxtapleural right 50 mm +40 HU");
}

#[test]
fn hilar_masses() {
    for (d, slice) in [(30.0, 2.5), (50.0, 1.25), (50.0, 5.0)] {
        let s = with_disease(
            Variant::HilarMass,
            slice,
            Disease::HilarMass {
                side: 0,
                diameter_mm: d,
                hu: 35.0,
            },
        );
        check_cover(s, &format!("hilar right {d} mm, {slice} mm slices"));
    }
}

/// A left hilar mass lies against the heart: the part of it that meets the heart has no lung or pleura
/// beyond it (same attenuation, no fat plane), so it is claimed by the convex fill and the notch closing
/// of the disease step, not by the rays. Sizes 30–60 mm at 1.25–5 mm slices.
#[test]
fn hilar_masses_left_beside_the_heart() {
    check_cover(left_hilar(), "hilar left 40 mm, 2.5 mm slices");
    for (d, slice) in [(30.0, 1.25), (40.0, 5.0), (50.0, 2.5), (60.0, 2.5)] {
        let s = with_disease(
            Variant::HilarMass,
            slice,
            Disease::HilarMass {
                side: 1,
                diameter_mm: d,
                hu: 35.0,
            },
        );
        check_cover(s, &format!("hilar left {d} mm, {slice} mm slices"));
    }
}

fn left_hilar() -> Spec {
    with_disease(
        Variant::HilarMass,
        2.5,
        Disease::HilarMass {
            side: 1,
            diameter_mm: 40.0,
            hu: 35.0,
        },
    )
}

#[test]
fn debug_standard() {
    if let Ok(v) = std::env::var("LUNGDZ_DEBUG") {
        if let Some(variant) = Variant::ALL.iter().find(|x| x.name() == v) {
            run(spec(*variant, 2.5), &v);
        }
    }
}

/// A wholly consolidated right lower lobe: covered 89 % before the medial rule (the part against the
/// heart, where the mirrored left side holds the heart), 95.3 % (1.25 mm) / 95.1 % (5 mm) with it; what
/// is left is the medial part below the left dome's top and the mixed row along the fissure.
#[test]
fn consolidated_lobe() {
    for slice in [1.25, 5.0] {
        check_cover(
            spec(Variant::ConsolidatedLobe, slice),
            &format!("consolidated RLL, {slice} mm slices"),
        );
    }
}

/// Beyond the one phantom: the left lower lobe (the heart lies on the left, so its mirror test passes and
/// the medial rule is not used), another seed (vessels and nodules drawn anew), and a smaller
/// consolidation — the medial basal segment alone, against the heart — at 2.5 and 5 mm slices.
/// Floors against regression where the target is not met: the medial basal segment is covered ~82 %
/// (60 % before the medial rule took a core behind as well as beside; what is left is its part below the
/// other side's dome top and the wedge against the heart, of the heart's density), and the left lower
/// lobe's lung takes in ~180 mL of the heart beside it (Dice ~0.94; so before the medial rule too).
#[test]
fn consolidated_lobe_variants() {
    let lll = with_disease(
        Variant::ConsolidatedLobe,
        2.5,
        Disease::ConsolidatedLobe { side: 1, hu: 40.0 },
    );
    let mut seed7 = spec(Variant::ConsolidatedLobe, 2.5);
    seed7.seed = 7;
    // (spec, tag, least cover, least Dice of the diseased side)
    let mut cases = vec![
        (
            lll,
            "consolidated LLL, 2.5 mm slices".to_string(),
            0.95,
            0.93,
        ),
        (
            seed7,
            "consolidated RLL seed 7, 2.5 mm".to_string(),
            0.95,
            0.95,
        ),
    ];
    for slice in [2.5, 5.0] {
        cases.push((
            with_disease(
                Variant::ConsolidatedLobe,
                slice,
                Disease::ConsolidatedMedialBasal { side: 0, hu: 35.0 },
            ),
            format!("consolidated RLL S7, {slice} mm slices"),
            0.80,
            0.95,
        ));
    }
    for (s, tag, cover, dice) in cases {
        let side = s.anatomy.disease.map_or(0, |d| d.side()) as usize;
        let o = run(s, &tag);
        assert!(o.cover >= cover, "{tag}: {:.1} %", 100.0 * o.cover);
        assert!(o.dice[side] >= dice, "{tag}: Dice {:?}", o.dice);
        assert!(o.dice[1 - side] >= 0.99, "{tag}: Dice {:?}", o.dice);
    }
}

#[test]
fn collapsed_lobe() {
    for slice in [1.25, 5.0] {
        check_cover(
            spec(Variant::CollapsedLobe, slice),
            &format!("collapsed LLL, {slice} mm slices"),
        );
    }
}

#[test]
fn effusion_stays_out_of_the_lung() {
    for (variant, slice) in [
        (Variant::EffusionLeft, 2.5),
        (Variant::EffusionRight, 1.25),
        (Variant::EffusionRight, 5.0),
    ] {
        let tag = format!("{}, {slice} mm slices", variant.name());
        let o = run(spec(variant, slice), &tag);
        assert!(
            o.effusion_inside <= 0.05,
            "{tag}: {:.1} % of the effusion inside the lung",
            100.0 * o.effusion_inside
        );
        assert!(
            o.dice[0] >= 0.95 && o.dice[1] >= 0.95,
            "{tag}: Dice {:?}",
            o.dice
        );
        if let Some(ml) = o.effusion_reported_ml {
            assert!(
                (ml - o.effusion_ml).abs() <= 0.25 * o.effusion_ml,
                "{tag}: effusion reported {ml:.0} mL, truth {:.0} mL",
                o.effusion_ml
            );
        }
    }
}

/// Segment with and without the disease step (the latter is the lung of version 0.1).
fn both(v: &segnode_imaging::volume::Volume) -> [(Segmentation, f64); 2] {
    use segnode_imaging::segment::lung::{LungParams, LungSegmenter};
    [true, false].map(|enabled| {
        let mut params = LungParams::default();
        params.disease.enabled = enabled;
        let seg = LungSegmenter { params };
        let t0 = std::time::Instant::now();
        let s = seg.segment(v).unwrap();
        (s, t0.elapsed().as_secs_f64())
    })
}

/// The real contrast chest crop (no ground truth, no visible disease): the new masks must not move away
/// from the air-only ones — per lung, volume within 3 % and Dice between old and new ≥ 0.98.
#[test]
fn real_chest_crop_not_worse_than_air_only() {
    let v = load_series(
        &support::shared_data("chest-ct-crop"),
        &LoadOptions::default(),
    )
    .unwrap();
    let [(new, t_new), (old, t_old)] = both(&v);
    let voxel_ml = v.geometry.voxel_volume_mm3() / 1000.0;
    for label in ["Right lung", "Left lung"] {
        let (a, b) = (code_of(&new, label).unwrap(), code_of(&old, label).unwrap());
        let (mut inter, mut na, mut nb) = (0usize, 0usize, 0usize);
        for (&x, &y) in new.labels.iter().zip(old.labels.iter()) {
            inter += (x == a && y == b) as usize;
            na += (x == a) as usize;
            nb += (y == b) as usize;
        }
        let dice = 2.0 * inter as f64 / (na + nb).max(1) as f64;
        let (ml_new, ml_old) = (na as f64 * voxel_ml, nb as f64 * voxel_ml);
        let aerated = new
            .segment(a)
            .and_then(|s| s.measurements.iter().find(|m| m.name == "aerated_volume"))
            .map(|m| m.value)
            .unwrap_or(f64::NAN);
        eprintln!(
            "REAL chest-ct-crop {label}: old {ml_old:.1} mL new {ml_new:.1} mL (aerated {aerated:.1} mL) Dice(old,new) {dice:.4} | {:.0} ms vs {:.0} ms | notes {:?}",
            t_old * 1e3,
            t_new * 1e3,
            new.notes
        );
        assert!(dice >= 0.98, "{label}: Dice old/new {dice:.4}");
        assert!(
            (ml_new - ml_old).abs() <= 0.03 * ml_old,
            "{label}: {ml_old:.1} -> {ml_new:.1} mL"
        );
    }
    assert!(
        !new.segments
            .iter()
            .any(|s| s.description.label.ends_with("pleural effusion")),
        "no effusion in this scan"
    );
}

/// Runtime of the lung pipeline with and without the disease step on a 512×512×300 chest phantom
/// (1 mm slices). Prints the ratio; run with `--ignored` (≈ 1 min to generate).
#[test]
#[ignore = "benchmark: 512x512x300 phantom"]
fn runtime_512_by_300() {
    let mut s = Spec::new(Variant::Standard, 42, 512);
    s.slice_spacing = 1.0;
    let centre = 0.5 * (s.z_range[0] + s.z_range[1]);
    s.z_range = [centre - 149.5, centre + 149.5 + 1e-6];
    let ph = generate(&s);
    let v = segnode_imaging::volume::Volume {
        hu: ph.hu.clone(),
        geometry: ph.geometry.clone(),
        slices: (0..ph.hu.shape()[0])
            .map(|k| segnode_imaging::volume::SliceRef {
                path: format!("s{k}").into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: format!("2.25.{k}"),
                frame_number: None,
                position: ph.geometry.index_to_patient(k as f64, 0.0, 0.0),
            })
            .collect(),
        series: Default::default(),
        out_of_field: None,
        dropped: vec![],
    };
    let mut t = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        let [(_, a), (_, b)] = both(&v);
        t[0].push(a);
        t[1].push(b);
    }
    for x in &mut t {
        x.sort_by(|a, b| a.total_cmp(b));
    }
    eprintln!(
        "RUNTIME 512x512x{}: with disease {:.2} s, air only {:.2} s, ratio {:.2} (medians of 3)",
        v.hu.shape()[0],
        t[0][1],
        t[1][1],
        t[0][1] / t[1][1]
    );
}
