//! The `cochlear` pipeline on the CBCT phantom variants: written as DICOM, loaded, segmented, compared
//! with the phantom's truth (electrode Dice, contact count and positions, laterality, the dental filling
//! never labelled, insertion depth). The electrode's truth is its metal at physical size (issue 11; the
//! generator's module doc), not the saturated bloom the device shows.

mod support;

use segnode_imaging::segment::cochlear::CochlearSegmenter;
use segnode_imaging::segment::{Segmentation, Segmenter};
use segnode_imaging::volume::{load_series, LoadOptions, SliceRef, Volume};
use segnode_phantom::cbct::{cbct_class, generate_cbct, CbctPhantom, CbctSpec, CbctVariant};
use segnode_phantom::write_cbct_series;

/// Lowest electrode Dice against the metal at physical size, per array. That truth is a few voxels per
/// contact on this generator's grids (0.3–0.5 mm balls on 0.2–0.3 mm voxels fill half a voxel only
/// where they sit centred: 3 truth voxels for 12 contacts on coronal-left seed 1), so one array's Dice
/// is dominated by sampling: measured 0.061–0.551 over every variant and seeds 1–5 (the saturated
/// bloom as the mask: 0.049–0.317). The floor catches an empty or misplaced mask; the mean below and
/// [`half_peak_extent_comes_closer_to_the_metal_than_the_bloom`] judge the extent. Over seeds 1–4 the
/// mask holds 2.9× the truth's voxels (the bloom 6.6×): the rim rule is derived for a line's 2-D
/// Gaussian cross-section, and this generator's isolated balls blur in 3-D, with a heavier rim.
const MIN_DICE: f64 = 0.05;

/// Lowest mean electrode Dice over [`every_variant_over_seeds`]: measured 0.277 over seeds 1–4 (the
/// bloom as the mask: 0.186, which fails it).
const MIN_MEAN_DICE: f64 = 0.25;

/// Lowest mean gain in Dice of the half-peak extent over the bloom on seed 5: measured +0.153
/// (0.238 → 0.391).
const MIN_GAIN_OVER_BLOOM: f64 = 0.1;

/// The segmenter under test: the default, or with `COCHLEAR_BLOOM_MASK=1` the saturated bloom as the
/// mask of clipped metal (`clipped_extent_from_rim` off), to measure what the default gains.
fn segmenter() -> CochlearSegmenter {
    let mut s = CochlearSegmenter::default();
    if std::env::var("COCHLEAR_BLOOM_MASK").is_ok_and(|v| v == "1") {
        s.params.profile.clipped_extent_from_rim = false;
    }
    s
}

/// Result of one variant, for the table and the assertions.
#[derive(Debug)]
struct Row {
    variant: &'static str,
    side: &'static str,
    dice: f64,
    /// Voxels of the truth (metal at physical size) and of the mask.
    truth_voxels: usize,
    mask_voxels: usize,
    truth_contacts: usize,
    found_contacts: usize,
    max_err_mm: f64,
    angle_truth: f64,
    angle_found: Option<f64>,
    touches_edge: bool,
}

/// The phantom as a volume in memory (no DICOM round trip) for seed sweeps.
fn in_memory(ph: &CbctPhantom) -> Volume {
    let n = ph.hu.shape()[0];
    Volume {
        hu: ph.hu.clone(),
        geometry: ph.geometry.clone(),
        slices: (0..n)
            .map(|k| SliceRef {
                path: format!("slice{k}").into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: format!("2.25.{k}"),
                frame_number: None,
                position: ph.geometry.index_to_patient(k as f64, 0.0, 0.0),
            })
            .collect(),
        series: Default::default(),
        out_of_field: None,
        dropped: Vec::new(),
    }
}

fn run(variant: CbctVariant) -> (CbctPhantom, Volume, Segmentation) {
    let ph = generate_cbct(&CbctSpec::new(variant, 5));
    let dir = tempfile::tempdir().unwrap();
    write_cbct_series(&ph, dir.path()).unwrap();
    let v = load_series(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(v.shape(), {
        let s = ph.hu.shape();
        [s[0], s[1], s[2]]
    });
    let seg = segmenter().segment(&v).unwrap();
    (ph, v, seg)
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Compare every implanted side; returns the rows (asserts nothing).
fn compare(variant: CbctVariant, ph: &CbctPhantom, v: &Volume, seg: &Segmentation) -> Vec<Row> {
    let arrays = seg.details.as_ref().map(|d| d["arrays"].clone());
    let mut rows = Vec::new();
    for placed in &ph.arrays {
        let left = placed.side == 1;
        let side = if left { "left" } else { "right" };
        let class = if left {
            cbct_class::LEFT_ELECTRODE
        } else {
            cbct_class::RIGHT_ELECTRODE
        };
        // issue 11: one ear in a small field has side `unknown` (no laterality), never the wrong side
        let single = ph.arrays.len() == 1;
        let segment = seg
            .segments
            .iter()
            .find(|s| s.description.label.to_lowercase().starts_with(side))
            .or_else(|| {
                seg.segments
                    .iter()
                    .find(|s| single && s.description.modifier.is_none())
            });
        let number = segment.map(|s| s.number).unwrap_or(0);
        let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
        for (t, l) in ph.truth.iter().zip(seg.labels.iter()) {
            let in_t = *t == class;
            let in_l = number != 0 && *l == number;
            a += in_t as usize;
            b += in_l as usize;
            inter += (in_t && in_l) as usize;
        }
        let dice = 2.0 * inter as f64 / (a + b).max(1) as f64;
        // truth contacts inside the grid (the clipped variant cuts some off); one whose centre lies
        // within a voxel inside or two voxels outside the edge may be seen (its bloom reaches in) or not
        let shape = v.shape();
        let margin = |c: &[f64; 3]| {
            let idx = v.geometry.patient_to_index(*c);
            (0..3)
                .map(|x| idx[x].min(shape[x] as f64 - 1.0 - idx[x]))
                .fold(f64::INFINITY, f64::min)
        };
        let inside: Vec<[f64; 3]> = placed
            .contacts
            .iter()
            .copied()
            .filter(|c| margin(c) >= 1.0)
            .collect();
        let at_edge = placed
            .contacts
            .iter()
            .filter(|c| (-2.0..1.0).contains(&margin(c)))
            .count();
        let found: Vec<[f64; 3]> = arrays
            .as_ref()
            .and_then(|arr| {
                arr.as_array()?
                    .iter()
                    .find(|x| x["side"] == side || (single && x["side"] == "unknown"))
                    .map(|x| {
                        x["contacts_mm"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| {
                                let c = c.as_array().unwrap();
                                [
                                    c[0].as_f64().unwrap(),
                                    c[1].as_f64().unwrap(),
                                    c[2].as_f64().unwrap(),
                                ]
                            })
                            .collect()
                    })
            })
            .unwrap_or_default();
        let angle_found = arrays.as_ref().and_then(|arr| {
            arr.as_array()?
                .iter()
                .find(|x| x["side"] == side || (single && x["side"] == "unknown"))
                .and_then(|x| x["insertion_depth"]["degrees"].as_f64())
        });
        // contacts are listed tip first: the truth ones inside the grid are the first found ones (the
        // clipped variant loses its basal end), an extra contact at the edge may follow
        let expected = if found.len() > inside.len() && found.len() <= inside.len() + at_edge {
            found.len()
        } else {
            inside.len()
        };
        let touches_edge = at_edge > 0 || inside.len() < placed.contacts.len();
        let max_err_mm = if found.len() != expected {
            f64::INFINITY
        } else if !touches_edge {
            inside
                .iter()
                .zip(&found)
                .map(|(t, f)| dist(*t, *f))
                .fold(0.0, f64::max)
        } else {
            // an array cut by the field of view may fall into pieces whose order is ambiguous: match
            // each truth contact to its nearest found one, each found one used once
            let mut used = vec![false; found.len()];
            let mut worst: f64 = 0.0;
            for t in &inside {
                let best = found
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !used[*n])
                    .map(|(n, f)| (dist(*t, *f), n))
                    .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a });
                if best.0.is_finite() {
                    used[best.1] = true;
                }
                worst = worst.max(best.0);
            }
            worst
        };
        rows.push(Row {
            variant: variant.name(),
            side,
            dice,
            truth_voxels: a,
            mask_voxels: b,
            truth_contacts: expected,
            touches_edge,
            found_contacts: found.len(),
            max_err_mm,
            angle_truth: placed.insertion_angle_deg,
            angle_found,
        });
    }
    rows
}

fn filling_voxels_labelled(ph: &CbctPhantom, seg: &Segmentation) -> usize {
    ph.truth
        .iter()
        .zip(seg.labels.iter())
        .filter(|(t, l)| **t == cbct_class::FILLING && **l != 0)
        .count()
}

fn check(variant: CbctVariant) {
    let (ph, v, seg) = run(variant);
    let rows = compare(variant, &ph, &v, &seg);
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {} | {} | {:.3} | {:.0} | {} |",
            r.variant,
            r.side,
            r.dice,
            r.truth_contacts,
            r.found_contacts,
            r.max_err_mm,
            r.angle_truth,
            r.angle_found
                .map(|a| format!("{a:.0}"))
                .unwrap_or("-".into())
        );
    }
    println!("notes: {:?}", seg.notes);
    assert_eq!(
        seg.segments.len(),
        ph.arrays.len(),
        "one segment per implanted side: {:?}",
        seg.notes
    );
    for r in &rows {
        assert!(r.dice >= MIN_DICE, "{r:?}");
        assert_eq!(r.found_contacts, r.truth_contacts, "{r:?}");
        assert!(r.max_err_mm <= 0.3, "{r:?}");
        if let (Some(a), false) = (r.angle_found, r.touches_edge) {
            assert!((a - r.angle_truth).abs() <= 30.0, "{r:?}");
        }
    }
    assert_eq!(filling_voxels_labelled(&ph, &seg), 0);
}

#[test]
fn coronal_right_tight_pitch_02mm() {
    check(CbctVariant::CoronalRight);
}

#[test]
fn coronal_left_wide_pitch_03mm() {
    check(CbctVariant::CoronalLeft);
}

#[test]
fn axial_both_ears_one_segment_per_side() {
    check(CbctVariant::AxialBoth);
}

#[test]
fn axial_left_02mm() {
    check(CbctVariant::AxialLeft);
}

#[test]
fn axial_dental_filling_never_labelled() {
    let (ph, _, seg) = run(CbctVariant::AxialFilling);
    assert!(
        ph.truth
            .iter()
            .filter(|&&t| t == cbct_class::FILLING)
            .count()
            > 100,
        "the phantom must hold a visible filling"
    );
    assert_eq!(filling_voxels_labelled(&ph, &seg), 0);
    check(CbctVariant::AxialFilling);
}

#[test]
fn sagittal_anisotropic_4095_device_max() {
    check(CbctVariant::SagittalAniso);
}

#[test]
fn coronal_array_partly_outside_the_field_of_view() {
    check(CbctVariant::CoronalClipped);
}

/// Every variant with more seeds (contact sizes, offsets, noise and streak phases change with the seed).
#[test]
fn every_variant_over_seeds() {
    // more seeds with COCHLEAR_SEEDS=N (default 4)
    let seeds: u64 = std::env::var("COCHLEAR_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut failures = Vec::new();
    let (mut dice_sum, mut arrays) = (0.0, 0usize);
    for variant in CbctVariant::TESTED {
        for seed in 1..=seeds {
            let ph = generate_cbct(&CbctSpec::new(variant, seed));
            let v = in_memory(&ph);
            let seg = segmenter().segment(&v).unwrap();
            for r in compare(variant, &ph, &v, &seg) {
                let angle_ok = match (r.angle_found, r.touches_edge) {
                    (Some(a), false) => (a - r.angle_truth).abs() <= 30.0,
                    _ => true,
                };
                let ok = r.dice >= MIN_DICE
                    && r.found_contacts == r.truth_contacts
                    && r.max_err_mm <= 0.3
                    && angle_ok;
                dice_sum += r.dice;
                arrays += 1;
                println!(
                    "seed {seed} | {} | {} | {:.3} (truth {} / mask {} voxels) | {}/{} | {:.3} | {:.0} | {:?} {}",
                    r.variant,
                    r.side,
                    r.dice,
                    r.truth_voxels,
                    r.mask_voxels,
                    r.found_contacts,
                    r.truth_contacts,
                    r.max_err_mm,
                    r.angle_truth,
                    r.angle_found.map(|a| a.round()),
                    if ok { "" } else { "FAIL" }
                );
                if !ok {
                    failures.push(format!("seed {seed}: {r:?}"));
                }
            }
            if seg.segments.len() != ph.arrays.len() || filling_voxels_labelled(&ph, &seg) > 0 {
                failures.push(format!(
                    "seed {seed} {}: segments {:?}",
                    variant.name(),
                    seg.notes
                ));
            }
        }
    }
    let mean = dice_sum / arrays.max(1) as f64;
    println!("mean electrode Dice over {arrays} arrays: {mean:.3}");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(mean >= MIN_MEAN_DICE, "mean Dice {mean:.3}");
}

#[test]
fn bright_bone_near_the_clipped_maximum() {
    check(CbctVariant::BrightBone);
}

#[test]
fn double_oblique_stack() {
    check(CbctVariant::Oblique);
}

/// The default mask of clipped metal (its half-peak extent from the rim, `clipped_extent_from_rim`)
/// against the saturated bloom, both scored against the metal at physical size on every variant: the
/// default must come closer, in the mean by a clear margin and on no variant worse, while the contacts
/// stay exact.
#[test]
fn half_peak_extent_comes_closer_to_the_metal_than_the_bloom() {
    let mut bloom = CochlearSegmenter::default();
    bloom.params.profile.clipped_extent_from_rim = false;
    let (mut sum_bloom, mut sum_rim, mut n) = (0.0, 0.0, 0usize);
    for variant in CbctVariant::TESTED {
        let ph = generate_cbct(&CbctSpec::new(variant, 5));
        let v = in_memory(&ph);
        let rim_rows = compare(
            variant,
            &ph,
            &v,
            &CochlearSegmenter::default().segment(&v).unwrap(),
        );
        let bloom_rows = compare(variant, &ph, &v, &bloom.segment(&v).unwrap());
        for (r, b) in rim_rows.iter().zip(&bloom_rows) {
            println!(
                "| {} | {} | Dice bloom {:.3}, half-peak {:.3} |",
                r.variant, r.side, b.dice, r.dice
            );
            assert_eq!(r.found_contacts, r.truth_contacts, "{r:?}");
            assert!(r.dice > b.dice, "half-peak {r:?}, bloom {b:?}");
            sum_bloom += b.dice;
            sum_rim += r.dice;
            n += 1;
        }
    }
    let (mb, mr) = (sum_bloom / n as f64, sum_rim / n as f64);
    println!("mean Dice against the metal at physical size: bloom {mb:.3}, half-peak {mr:.3}");
    assert!(
        mr > mb + MIN_GAIN_OVER_BLOOM,
        "bloom {mb:.3}, half-peak {mr:.3}"
    );
}
