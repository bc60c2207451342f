//! Classical 3D lung segmentation (left and right lung) with per-lung measurements.
//!
//! Pipeline (coarse grid ≈ 2 mm, then refined at full resolution):
//! 1. Block-mean downsampling; out-of-field blocks are neither air nor tissue.
//! 2. Air (< −400 HU) and tissue components in 3D; the body is the largest tissue component.
//! 3. Each air component is judged on evidence, not on where it touches the image: lung parenchyma has a
//!    core mean above the gas level (−960 HU), a share of voxels in the parenchyma range, and borders
//!    mostly on the body. Outside air, stomach / bowel gas (pure gas, any size) and the table's foam core
//!    (borders on the table, not the body) fail; lungs cut by the field of view pass.
//! 4. Trachea and main bronchi: a small, round, medial pure-gas section in the most superior slices seeds a
//!    breadth-first growth through gas that stops when the front explodes (a leak into emphysema); the
//!    grown airway plus a rim is cut out of the lung mask.
//! 5. Left / right: two large components, or one fused mass split by erosion until it separates and
//!    competitive regrowth; sides from the patient x of each centroid (left lung at +x in LPS).
//! 6. Per lung: in-plane closing (juxtapleural nodules) and hole filling (vessels), then refinement at
//!    full resolution (the coarse interior is kept, the border band re-thresholded) and 2D hole filling.
//! 7. Measurements per lung: volume (mL), mean HU, LAA% below −950 HU.

use super::codes::{ANATOMICAL_STRUCTURE, LEFT, LUNG, MORPHOLOGICAL_OPERATIONS, RIGHT};
use super::morph::{self, dims, neighbours6};
use super::{Measurement, Segment, SegmentDescription, SegmentError, Segmentation, Segmenter};
use crate::volume::Volume;
use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

/// Tunable thresholds of the lung pipeline (defaults are the validated ones).
#[derive(Debug, Clone)]
pub struct LungParams {
    /// Air / tissue threshold (HU).
    pub air_hu: i16,
    /// Target voxel size of the coarse grid (mm).
    pub coarse_mm: f64,
    /// Components whose core mean is below this are gas (outside air, stomach, bowel), not lung.
    pub gas_mean_hu: f64,
    /// Minimum share of a lung component's voxels in the parenchyma range −950..−600 HU.
    pub min_parenchyma_fraction: f64,
    /// Minimum share of an air component's tissue border that is the body (not the table, not arms).
    pub min_body_contact: f64,
    /// Components smaller than this (mL) are not lung candidates.
    pub min_component_ml: f64,
    /// Less lung than this in total (mL): "no lung found".
    pub min_lung_ml: f64,
    /// Gas threshold of the airway growth (HU).
    pub airway_hu: i16,
    /// Radius of the in-plane closing that takes in juxtapleural nodules (mm).
    pub nodule_close_mm: f64,
    /// Largest in-plane hole filled inside a lung (mm²): vessels, airways, nodules and masses up to
    /// ~3.5 cm, not the diaphragm dome inside a ring of lung base.
    pub max_hole_mm2: f64,
    /// Low-attenuation threshold of the emphysema index (HU).
    pub laa_hu: i16,
}

impl Default for LungParams {
    fn default() -> Self {
        LungParams {
            air_hu: -400,
            coarse_mm: 2.0,
            gas_mean_hu: -960.0,
            min_parenchyma_fraction: 0.5,
            min_body_contact: 0.6,
            min_component_ml: 5.0,
            min_lung_ml: 15.0,
            airway_hu: -950,
            nodule_close_mm: 6.0,
            max_hole_mm2: 1000.0,
            laa_hu: -950,
        }
    }
}

/// The lung pipeline.
#[derive(Debug, Default, Clone)]
pub struct LungSegmenter {
    pub params: LungParams,
}

pub const VERSION: &str = "0.1.0";

/// Internal side codes in the label maps (remapped to consecutive segment numbers at the end).
const RIGHT_CODE: u8 = 1;
const LEFT_CODE: u8 = 2;

impl Segmenter for LungSegmenter {
    fn name(&self) -> &'static str {
        "lung"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    fn segment(&self, volume: &Volume) -> Result<Segmentation, SegmentError> {
        let [nk, nj, ni] = volume.shape();
        if nk < 2 || nj < 8 || ni < 8 {
            return Err(SegmentError::VolumeTooSmall(format!("{nk}x{nj}x{ni}")));
        }
        let mut notes = Vec::new();
        let sides = match self.coarse_lungs(volume, &mut notes) {
            Some(c) => c,
            None => return Ok(empty(volume, notes)),
        };
        let labels = self.refine(volume, &sides);
        Ok(self.finish(volume, labels, notes))
    }
}

/// Coarse-grid result: side labels, the airway exclusion and the grid factors.
struct Coarse {
    f: [usize; 3],
    /// Side codes per coarse voxel, after closing and hole filling.
    sides: Array3<u8>,
    /// Airway lumen plus rim: never lung.
    exclude: Array3<bool>,
}

fn empty(volume: &Volume, mut notes: Vec<String>) -> Segmentation {
    if !notes.iter().any(|n| n.contains("no lung found")) {
        notes.push("no lung found".into());
    }
    Segmentation {
        labels: Array3::zeros(volume.hu.raw_dim()),
        segments: Vec::new(),
        notes,
        details: None,
    }
}

#[derive(Debug, Default, Clone)]
struct CompStats {
    size: usize,
    sum: i64,
    core: usize,
    core_sum: i64,
    parenchyma: usize,
    body_contact: usize,
    other_contact: usize,
}

impl LungSegmenter {
    fn coarse_lungs(&self, volume: &Volume, notes: &mut Vec<String>) -> Option<Coarse> {
        let p = &self.params;
        let g = &volume.geometry;
        let sp = g.spacing_kji();
        let f = [0, 1, 2].map(|a| ((p.coarse_mm / sp[a]).round() as usize).max(1));
        let cvox_ml = (0..3).map(|a| sp[a] * f[a] as f64).product::<f64>() / 1000.0;
        let oof = volume.out_of_field.as_ref();
        let excl = |k: usize, j: usize, i: usize| oof.is_some_and(|m| m.get(k, j, i));
        let (c, c_oof) = morph::downsample_mean(
            volume.hu.view(),
            oof.map(|_| &excl as &(dyn Fn(usize, usize, usize) -> bool + Sync)),
            f,
        );
        let d = dims(&c);
        let air = Zip::from(&c)
            .and(&c_oof)
            .map_collect(|&v, &o| v < p.air_hu && !o);
        let tissue = Zip::from(&c)
            .and(&c_oof)
            .map_collect(|&v, &o| v >= p.air_hu && !o);

        // body: the largest tissue component
        let (tlab, tsizes) = morph::label6(&tissue);
        let Some(body_id) = tsizes
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| **s)
            .map(|(n, _)| n as u32 + 1)
        else {
            notes.push("no lung found: no tissue in the volume".into());
            return None;
        };

        // air components and their evidence
        let (alab, asizes) = morph::label6(&air);
        let mut stats = vec![CompStats::default(); asizes.len()];
        {
            let cs = c.as_slice().expect("layout");
            let al = alab.as_slice().expect("layout");
            let tl = tlab.as_slice().expect("layout");
            for pidx in 0..cs.len() {
                let a = al[pidx];
                if a == 0 {
                    continue;
                }
                let s = &mut stats[a as usize - 1];
                let v = cs[pidx];
                s.size += 1;
                s.sum += v as i64;
                if (-950..=-600).contains(&v) {
                    s.parenchyma += 1;
                }
                let mut all_air = true;
                neighbours6(pidx, d, |q| {
                    if al[q] != a {
                        all_air = false;
                    }
                    let t = tl[q];
                    if t == body_id {
                        s.body_contact += 1;
                    } else if t != 0 {
                        s.other_contact += 1;
                    }
                });
                if all_air {
                    s.core += 1;
                    s.core_sum += v as i64;
                }
            }
        }
        let mut lungish = vec![false; stats.len()];
        for (n, s) in stats.iter().enumerate() {
            let ml = s.size as f64 * cvox_ml;
            if ml < p.min_component_ml {
                continue;
            }
            let mean = if s.core >= 8 {
                s.core_sum as f64 / s.core as f64
            } else {
                s.sum as f64 / s.size as f64
            };
            let paren = s.parenchyma as f64 / s.size as f64;
            let contact = s.body_contact as f64 / (s.body_contact + s.other_contact).max(1) as f64;
            let ok = mean > p.gas_mean_hu
                && paren >= p.min_parenchyma_fraction
                && contact >= p.min_body_contact;
            tracing::debug!(
                component = n + 1,
                ml,
                mean,
                paren,
                contact,
                ok,
                "air component"
            );
            lungish[n] = ok;
        }
        let lung = alab.map(|&a| a > 0 && lungish[a as usize - 1]);
        let lung_ml = lung.iter().filter(|&&v| v).count() as f64 * cvox_ml;
        if lung_ml < p.min_lung_ml {
            notes.push(format!(
                "no lung found: {lung_ml:.0} mL of lung-like air (minimum {:.0} mL)",
                p.min_lung_ml
            ));
            return None;
        }

        // trachea and main bronchi
        let exclude = match self.airway(volume, &c, &lung, &tlab, body_id, f) {
            Some(w) => {
                let x = morph::dilate6(&w, 1, None);
                let ml = w.iter().filter(|&&v| v).count() as f64 * cvox_ml;
                notes.push(format!("airway removed: {ml:.0} mL"));
                x
            }
            None => {
                notes.push("no trachea found in the covered range".into());
                Array3::from_elem(d, false)
            }
        };
        let lung2 = Zip::from(&lung).and(&exclude).map_collect(|&l, &x| l && !x);

        // left / right
        let sides = self.split_sides(volume, &lung2, &tlab, body_id, f, cvox_ml, notes)?;

        // per side: closing (juxtapleural nodules) and hole filling (vessels), never into the airway,
        // out-of-field, outside air or the other lung
        let r_close = ((p.nodule_close_mm / (sp[1] * f[1] as f64).min(sp[2] * f[2] as f64)).round()
            as usize)
            .max(1);
        let mut out = sides.clone();
        for code in [RIGHT_CODE, LEFT_CODE] {
            let m = sides.map(|&s| s == code);
            if !m.iter().any(|&v| v) {
                continue;
            }
            let closed = morph::close2d(&m, r_close);
            Zip::from(&mut out)
                .and(&closed)
                .and(&exclude)
                .and(&c_oof)
                .and(&tlab)
                .for_each(|o, &cl, &x, &oo, &t| {
                    if cl && *o == 0 && !x && !oo && t == body_id {
                        *o = code;
                    }
                });
        }
        let max_hole = (p.max_hole_mm2 / (sp[1] * f[1] as f64 * sp[2] * f[2] as f64)) as usize;
        for code in [RIGHT_CODE, LEFT_CODE] {
            morph::fill_holes_2d(&mut out, code, max_hole);
        }
        // hole filling must not swallow the excluded airway
        Zip::from(&mut out)
            .and(&exclude)
            .and(&sides)
            .for_each(|o, &x, &s| {
                if x && s == 0 {
                    *o = 0;
                }
            });
        Some(Coarse {
            f,
            sides: out,
            exclude,
        })
    }

    /// Find the trachea in the most superior slices of the lung mask and grow the airway from it.
    fn airway(
        &self,
        volume: &Volume,
        c: &Array3<i16>,
        lung: &Array3<bool>,
        tlab: &Array3<u32>,
        body_id: u32,
        f: [usize; 3],
    ) -> Option<Array3<bool>> {
        let p = &self.params;
        let g = &volume.geometry;
        let d = dims(c);
        let sp = g.spacing_kji();
        let px_area = sp[1] * f[1] as f64 * sp[2] * f[2] as f64;
        let patient = |k: usize, j: f64, i: f64| {
            g.index_to_patient(
                (k * f[0]) as f64 + (f[0] as f64 - 1.0) / 2.0,
                j * f[1] as f64 + (f[1] as f64 - 1.0) / 2.0,
                i * f[2] as f64 + (f[2] as f64 - 1.0) / 2.0,
            )
        };
        let superior_up = g.axis_steps()[0][2] > 0.0;
        let ks: Vec<usize> = (0..d[0])
            .filter(|&k| lung.index_axis(Axis(0), k).iter().any(|&v| v))
            .collect();
        let order: Vec<usize> = if superior_up {
            ks.iter().rev().copied().collect()
        } else {
            ks.clone()
        };
        let window = ((100.0 / (sp[0] * f[0] as f64)).ceil() as usize).max(3);
        let mut seed: Option<(usize, Vec<(usize, usize)>)> = None;
        'search: for &k in order.iter().take(window) {
            let lp = lung.index_axis(Axis(0), k);
            let cp = c.index_axis(Axis(0), k);
            // body extent along patient x in this slice
            let (mut bx0, mut bx1) = (f64::MAX, f64::MIN);
            for ((j, i), &t) in tlab.index_axis(Axis(0), k).indexed_iter() {
                if t == body_id {
                    let x = patient(k, j as f64, i as f64)[0];
                    bx0 = bx0.min(x);
                    bx1 = bx1.max(x);
                }
            }
            if bx0 > bx1 {
                continue;
            }
            let mid = 0.5 * (bx0 + bx1);
            let mut seen = Array3::from_elem((1, d[1], d[2]), false);
            let mut best: Option<(f64, Vec<(usize, usize)>)> = None;
            for j in 0..d[1] {
                for i in 0..d[2] {
                    if !lp[[j, i]] || seen[[0, j, i]] {
                        continue;
                    }
                    // 2D component
                    let mut comp = vec![(j, i)];
                    seen[[0, j, i]] = true;
                    let mut q = 0;
                    while q < comp.len() {
                        let (cj, ci) = comp[q];
                        q += 1;
                        let nb = [
                            (cj.wrapping_sub(1), ci),
                            (cj + 1, ci),
                            (cj, ci.wrapping_sub(1)),
                            (cj, ci + 1),
                        ];
                        for (nj_, ni_) in nb {
                            if nj_ < d[1] && ni_ < d[2] && lp[[nj_, ni_]] && !seen[[0, nj_, ni_]] {
                                seen[[0, nj_, ni_]] = true;
                                comp.push((nj_, ni_));
                            }
                        }
                    }
                    let area = comp.len() as f64 * px_area;
                    let gas = comp
                        .iter()
                        .filter(|&&(a, b)| cp[[a, b]] < p.airway_hu)
                        .count() as f64
                        / comp.len() as f64;
                    let (mj, mi) = comp.iter().fold((0.0, 0.0), |acc, &(a, b)| {
                        (acc.0 + a as f64, acc.1 + b as f64)
                    });
                    let x = patient(k, mj / comp.len() as f64, mi / comp.len() as f64)[0];
                    let (j0, j1) = comp
                        .iter()
                        .fold((usize::MAX, 0), |a, &(b, _)| (a.0.min(b), a.1.max(b)));
                    let (i0, i1) = comp
                        .iter()
                        .fold((usize::MAX, 0), |a, &(_, b)| (a.0.min(b), a.1.max(b)));
                    let fill = comp.len() as f64 / ((j1 - j0 + 1) * (i1 - i0 + 1)) as f64;
                    let medial = (x - mid).abs() <= 0.2 * (bx1 - bx0);
                    if (50.0..=900.0).contains(&area)
                        && gas >= 0.5
                        && fill >= 0.4
                        && medial
                        && best.as_ref().is_none_or(|b| gas > b.0)
                    {
                        best = Some((gas, comp));
                    }
                }
            }
            if let Some((_, comp)) = best {
                seed = Some((k, comp));
                break 'search;
            }
        }
        let (k0, comp) = seed?;
        // breadth-first growth through gas, layer by layer, stopping when the front explodes
        let gas = Zip::from(lung)
            .and(c)
            .map_collect(|&l, &v| l && v < p.airway_hu);
        let gs = gas.as_slice().expect("layout");
        let mut grown = vec![false; gs.len()];
        let mut front: Vec<usize> = comp
            .iter()
            .map(|&(j, i)| (k0 * d[1] + j) * d[2] + i)
            .filter(|&q| gs[q])
            .collect();
        for &q in &front {
            grown[q] = true;
        }
        let mut sizes: Vec<usize> = vec![front.len()];
        let max_layers = (400.0 / (sp[0] * f[0] as f64).min(sp[1] * f[1] as f64)) as usize;
        for _ in 0..max_layers {
            let mut next = Vec::new();
            for &q in &front {
                neighbours6(q, d, |r| {
                    if gs[r] && !grown[r] {
                        grown[r] = true;
                        next.push(r);
                    }
                });
            }
            if next.is_empty() {
                break;
            }
            if sizes.len() >= 5 {
                let mut s = sizes.clone();
                s.sort_unstable();
                let median = s[s.len() / 2].max(4);
                if next.len() > 4 * median && next.len() > 30 {
                    // leak: undo this layer and stop
                    for &r in &next {
                        grown[r] = false;
                    }
                    tracing::debug!(
                        layer = sizes.len(),
                        front = next.len(),
                        median,
                        "airway growth stopped at a leak"
                    );
                    break;
                }
            }
            sizes.push(next.len());
            front = next;
        }
        Some(Array3::from_shape_vec(d, grown).expect("shape"))
    }

    #[allow(clippy::too_many_arguments)]
    fn split_sides(
        &self,
        volume: &Volume,
        lung: &Array3<bool>,
        tlab: &Array3<u32>,
        body_id: u32,
        f: [usize; 3],
        cvox_ml: f64,
        notes: &mut Vec<String>,
    ) -> Option<Array3<u8>> {
        let g = &volume.geometry;
        let d = dims(lung);
        let centre_x = |k: f64, j: f64, i: f64| {
            g.index_to_patient(
                k * f[0] as f64 + (f[0] as f64 - 1.0) / 2.0,
                j * f[1] as f64 + (f[1] as f64 - 1.0) / 2.0,
                i * f[2] as f64 + (f[2] as f64 - 1.0) / 2.0,
            )[0]
        };
        let centroids = |lab: &Array3<u32>, n: usize| -> Vec<f64> {
            let mut acc = vec![(0.0, 0.0, 0.0, 0usize); n];
            for ((k, j, i), &l) in lab.indexed_iter() {
                if l > 0 {
                    let a = &mut acc[l as usize - 1];
                    a.0 += k as f64;
                    a.1 += j as f64;
                    a.2 += i as f64;
                    a.3 += 1;
                }
            }
            acc.iter()
                .map(|a| {
                    centre_x(
                        a.0 / a.3.max(1) as f64,
                        a.1 / a.3.max(1) as f64,
                        a.2 / a.3.max(1) as f64,
                    )
                })
                .collect()
        };
        let (lab, sizes) = morph::label6(lung);
        if sizes.is_empty() {
            notes.push("no lung found: nothing left after removing the airway".into());
            return None;
        }
        let largest = *sizes.iter().max().unwrap_or(&0);
        let keep: Vec<bool> = sizes
            .iter()
            .map(|&s| s as f64 * cvox_ml >= 1.0 && s as f64 >= 0.005 * largest as f64)
            .collect();
        let total: usize = sizes
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| *s)
            .sum();
        let mut order: Vec<usize> = (0..sizes.len()).filter(|&n| keep[n]).collect();
        order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]));
        let cx = centroids(&lab, sizes.len());

        // two lungs as separate components?
        let two = order.len() >= 2
            && sizes[order[1]] as f64 >= 0.1 * total as f64
            && (cx[order[0]] - cx[order[1]]).abs() > 30.0;
        let mut seeds = Array3::<u8>::zeros(d);
        let side_of = |x_a: f64, x_b: f64| {
            if x_a > x_b {
                (LEFT_CODE, RIGHT_CODE)
            } else {
                (RIGHT_CODE, LEFT_CODE)
            }
        };
        if two {
            let (a, b) = (order[0], order[1]);
            let (sa, sb) = side_of(cx[a], cx[b]);
            let mid = 0.5 * (cx[a] + cx[b]);
            let left_is_a = sa == LEFT_CODE;
            Zip::from(&mut seeds).and(&lab).for_each(|s, &l| {
                if l > 0 && keep[l as usize - 1] {
                    let n = l as usize - 1;
                    *s = if n == a {
                        sa
                    } else if n == b {
                        sb
                    } else if (cx[n] > mid) == left_is_a {
                        // assign small pieces to the nearer side
                        sa
                    } else {
                        sb
                    };
                }
            });
            return Some(seeds);
        }
        // one mass: erode until it separates into two large parts, then regrow competitively
        let main = order[0];
        let mass = lab.map(|&l| l as usize == main + 1);
        let sp = g.spacing_kji();
        let max_r = ((15.0 / (sp[2] * f[2] as f64)).ceil() as usize).max(2);
        let mut eroded = mass.clone();
        for r in 1..=max_r {
            eroded = morph::erode6(&eroded, 1);
            let (el, es) = morph::label6(&eroded);
            let etotal: usize = es.iter().sum();
            if etotal == 0 {
                break;
            }
            let mut eo: Vec<usize> = (0..es.len()).collect();
            eo.sort_by(|a, b| es[*b].cmp(&es[*a]));
            if eo.len() >= 2 && es[eo[1]] as f64 >= 0.1 * etotal as f64 {
                let ecx = centroids(&el, es.len());
                let (a, b) = (eo[0], eo[1]);
                if (ecx[a] - ecx[b]).abs() > 30.0 {
                    let (sa, sb) = side_of(ecx[a], ecx[b]);
                    let mut s2 = Array3::<u8>::zeros(d);
                    Zip::from(&mut s2).and(&el).for_each(|s, &l| {
                        if l as usize == a + 1 {
                            *s = sa;
                        } else if l as usize == b + 1 {
                            *s = sb;
                        }
                    });
                    let allowed = lab.map(|&l| l > 0 && keep[l as usize - 1]);
                    notes.push(format!(
                        "lungs joined (e.g. at the anterior junction): split after {r} erosion(s)"
                    ));
                    return Some(morph::grow_labels(&s2, &allowed));
                }
            }
        }
        // a single lung: side from its position relative to the body's midline
        let mut bx = (0.0, 0usize);
        for ((k, j, i), &t) in tlab.indexed_iter() {
            if t == body_id && (k + j + i) % 7 == 0 {
                bx.0 += centre_x(k as f64, j as f64, i as f64);
                bx.1 += 1;
            }
        }
        let body_x = bx.0 / bx.1.max(1) as f64;
        let side = if cx[main] > body_x {
            LEFT_CODE
        } else {
            RIGHT_CODE
        };
        notes.push(format!(
            "one lung found ({})",
            if side == LEFT_CODE { "left" } else { "right" }
        ));
        Zip::from(&mut seeds).and(&lab).for_each(|s, &l| {
            if l > 0 && keep[l as usize - 1] {
                *s = side;
            }
        });
        Some(seeds)
    }

    /// Full-resolution labels: the coarse interior as is, the border band re-thresholded, holes filled.
    fn refine(&self, volume: &Volume, co: &Coarse) -> Array3<u8> {
        let p = &self.params;
        let f = co.f;
        let d = dims(&co.sides);
        // candidate region: each side dilated by one coarse voxel (not into the airway or the other side)
        let mut cand = co.sides.clone();
        for code in [RIGHT_CODE, LEFT_CODE] {
            let m = co.sides.map(|&s| s == code);
            let block = Zip::from(&co.sides)
                .and(&co.exclude)
                .map_collect(|&s, &x| x || (s != 0 && s != code));
            let dm = morph::dilate6(&m, 1, Some(&block));
            Zip::from(&mut cand).and(&dm).for_each(|c, &v| {
                if v && *c == 0 {
                    *c = code;
                }
            });
        }
        // sure region: coarse voxels whose 6 neighbours carry the same side
        let sides_s = co.sides.as_slice().expect("layout");
        let sure: Vec<bool> = (0..sides_s.len())
            .into_par_iter()
            .map(|q| {
                let s = sides_s[q];
                if s == 0 {
                    return false;
                }
                let mut all = true;
                neighbours6(q, d, |r| all &= sides_s[r] == s);
                all
            })
            .collect();
        let cand_s = cand.as_slice().expect("layout");
        let mut labels = Array3::<u8>::zeros(volume.hu.raw_dim());
        let oof = volume.out_of_field.as_ref();
        labels
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(volume.hu.axis_iter(Axis(0)))
            .enumerate()
            .for_each(|(k, (mut lp, hp))| {
                let ck = k / f[0];
                for ((j, i), l) in lp.indexed_iter_mut() {
                    let q = (ck * d[1] + j / f[1]) * d[2] + i / f[2];
                    let side = cand_s[q];
                    if side == 0 {
                        continue;
                    }
                    if sure[q] || (hp[[j, i]] < p.air_hu && !oof.is_some_and(|m| m.get(k, j, i))) {
                        *l = side;
                    }
                }
            });
        let px = volume.geometry.pixel_spacing;
        let max_hole = (p.max_hole_mm2 / (px[0] * px[1])) as usize;
        for code in [RIGHT_CODE, LEFT_CODE] {
            morph::fill_holes_2d(&mut labels, code, max_hole);
        }
        // the airway exclusion holds at full resolution too
        let ex = co.exclude.as_slice().expect("layout");
        labels
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(k, mut lp)| {
                let ck = k / f[0];
                for ((j, i), l) in lp.indexed_iter_mut() {
                    if *l != 0 && ex[(ck * d[1] + j / f[1]) * d[2] + i / f[2]] {
                        *l = 0;
                    }
                }
            });
        labels
    }

    /// Measurements, segment descriptions, consecutive segment numbers.
    fn finish(
        &self,
        volume: &Volume,
        mut labels: Array3<u8>,
        mut notes: Vec<String>,
    ) -> Segmentation {
        let p = &self.params;
        let voxel_ml = volume.geometry.voxel_volume_mm3() / 1000.0;
        // count, sum HU, LAA count per side code
        let acc = Zip::from(&labels).and(&volume.hu).fold(
            [(0usize, 0i64, 0usize); 3],
            |mut a, &l, &h| {
                if l > 0 && (l as usize) < 3 {
                    let e = &mut a[l as usize];
                    e.0 += 1;
                    e.1 += h as i64;
                    if h < p.laa_hu {
                        e.2 += 1;
                    }
                }
                a
            },
        );
        let mut segments = Vec::new();
        let mut remap = [0u8; 3];
        for code in [RIGHT_CODE, LEFT_CODE] {
            let (n, sum, laa) = acc[code as usize];
            let ml = n as f64 * voxel_ml;
            if n == 0 || ml < 0.5 {
                continue;
            }
            let number = segments.len() as u8 + 1;
            remap[code as usize] = number;
            let (label, side, lab) = if code == LEFT_CODE {
                ("Left lung", LEFT, [55000u16, 40000, 30000])
            } else {
                ("Right lung", RIGHT, [55000u16, 26000, 50000])
            };
            segments.push(Segment {
                number,
                description: SegmentDescription {
                    label: label.into(),
                    category: ANATOMICAL_STRUCTURE,
                    property_type: LUNG,
                    modifier: Some(side),
                    algorithm_name: "segnode lung".into(),
                    algorithm_version: VERSION.into(),
                    algorithm_family: MORPHOLOGICAL_OPERATIONS,
                    cielab: Some(lab),
                },
                measurements: vec![
                    Measurement {
                        name: "volume",
                        value: ml,
                        unit: "mL",
                    },
                    Measurement {
                        name: "mean_hu",
                        value: sum as f64 / n as f64,
                        unit: "HU",
                    },
                    Measurement {
                        name: "laa950_percent",
                        value: 100.0 * laa as f64 / n as f64,
                        unit: "%",
                    },
                ],
            });
        }
        if segments.is_empty() {
            return empty(volume, notes);
        }
        labels.par_mapv_inplace(|l| {
            if (l as usize) < 3 {
                remap[l as usize]
            } else {
                0
            }
        });
        notes.retain(|n| !n.starts_with("no lung found"));
        Segmentation {
            labels,
            segments,
            notes,
            details: None,
        }
    }
}
