//! Trachea and main bronchi: a small, round, medial pure-gas section in the most superior slices of the
//! lung-like air seeds a layer-by-layer growth through gas that stops when the front explodes (a leak into
//! emphysema or parenchyma). The caller cuts the grown airway plus a rim out of the lungs.

use super::LungSegmenter;
use crate::segment::morph::{dims, neighbours6};
use crate::volume::Volume;
use ndarray::{Array3, Axis, Zip};

impl LungSegmenter {
    /// Find the trachea in the most superior slices of the lung mask and grow the airway from it.
    pub(super) fn airway(
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
}
