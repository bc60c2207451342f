//! Left and right: two large components, or one joined mass split by erosion and competitive regrowth, or a
//! single lung placed by the body midline. Sides come from the patient x of the centroids (left at +x, LPS).

use super::{LungSegmenter, LEFT_CODE, RIGHT_CODE};
use crate::segment::morph::{self, dims};
use crate::volume::Volume;
use ndarray::{Array3, Zip};

impl LungSegmenter {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn split_sides(
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
        // a mass that lies well on both sides of the midline is two joined lungs erosion could not part:
        // cut it at the body midline rather than call it one lung
        let (mut n_left, mut n_right) = (0usize, 0usize);
        for ((k, j, i), &l) in lab.indexed_iter() {
            if l > 0 && keep[l as usize - 1] {
                if centre_x(k as f64, j as f64, i as f64) > body_x {
                    n_left += 1;
                } else {
                    n_right += 1;
                }
            }
        }
        let both = n_left.min(n_right) as f64 >= 0.25 * (n_left + n_right) as f64;
        if both {
            notes.push("lungs joined over a wide contact: split at the body midline".into());
        }
        let single = if cx[main] > body_x {
            LEFT_CODE
        } else {
            RIGHT_CODE
        };
        if !both {
            notes.push(format!(
                "one lung found ({})",
                if single == LEFT_CODE { "left" } else { "right" }
            ));
        }
        for ((k, j, i), s) in seeds.indexed_iter_mut() {
            let l = lab[[k, j, i]];
            if l > 0 && keep[l as usize - 1] {
                *s = if !both {
                    single
                } else if centre_x(k as f64, j as f64, i as f64) > body_x {
                    LEFT_CODE
                } else {
                    RIGHT_CODE
                };
            }
        }
        Some(seeds)
    }
}
