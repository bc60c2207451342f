//! Full-resolution refinement: the coarse interior is kept, the border band is re-thresholded at full
//! resolution, band holes enclosed by one lung are filled, the airway exclusion is kept out.

use super::{
    Coarse, LungSegmenter, Stopwatch, EXCLUDED, LEFT_CODE, LEFT_EFFUSION, RIGHT_CODE,
    RIGHT_EFFUSION,
};
use crate::segment::morph::{self, dims};
use crate::volume::Volume;
use ndarray::Array3;
use rayon::prelude::*;

impl LungSegmenter {
    /// Full-resolution labels: the coarse interior as is, the border band re-thresholded, holes filled.
    pub(super) fn refine(&self, volume: &Volume, co: &Coarse) -> Array3<u8> {
        let p = &self.params;
        let f = co.f;
        let d = dims(&co.sides);
        // candidate region: each side dilated by one coarse voxel (not into the airway or the other side;
        // where both sides touch a voxel, the right one), in one pass
        let sides_s = co.sides.as_slice().expect("layout");
        let ex = co.exclude.as_slice().expect("layout");
        let mut cand = Array3::<u8>::zeros(d);
        {
            let [ck, cj, ci] = d;
            let cplane = cj * ci;
            cand.as_slice_mut()
                .expect("layout")
                .par_chunks_mut(cplane)
                .enumerate()
                .for_each(|(k, cp)| {
                    for j in 0..cj {
                        for i in 0..ci {
                            let q = (k * cj + j) * ci + i;
                            let s = sides_s[q];
                            cp[j * ci + i] = if s != 0 {
                                s
                            } else if ex[q] {
                                0
                            } else {
                                let (mut near_r, mut near_l) = (false, false);
                                let mut see = |r: usize| match sides_s[r] {
                                    RIGHT_CODE => near_r = true,
                                    LEFT_CODE => near_l = true,
                                    _ => {}
                                };
                                crate::segment::morph::neighbours6_at(
                                    q,
                                    [k, j, i],
                                    [ck, cj, ci],
                                    &mut see,
                                );
                                if near_r {
                                    RIGHT_CODE
                                } else if near_l {
                                    LEFT_CODE
                                } else {
                                    0
                                }
                            };
                        }
                    }
                });
        }
        let mut sw = Stopwatch::new();
        let p_air = p.air_hu;
        // sure region: coarse voxels whose 6 neighbours carry the same side
        let sure: Vec<bool> = {
            let [ck, cj, ci] = d;
            let cplane = cj * ci;
            let mut sure = vec![false; sides_s.len()];
            sure.par_chunks_mut(cplane).enumerate().for_each(|(k, sp)| {
                for j in 0..cj {
                    for i in 0..ci {
                        let q = (k * cj + j) * ci + i;
                        let s = sides_s[q];
                        sp[j * ci + i] = s != 0
                            && (i == 0 || sides_s[q - 1] == s)
                            && (i + 1 == ci || sides_s[q + 1] == s)
                            && (j == 0 || sides_s[q - ci] == s)
                            && (j + 1 == cj || sides_s[q + ci] == s)
                            && (k == 0 || sides_s[q - cplane] == s)
                            && (k + 1 == ck || sides_s[q + cplane] == s);
                    }
                }
            });
            sure
        };
        let cand_s = cand.as_slice().expect("layout");
        let dis = co.disease.as_slice().expect("layout");
        let eff = co.effusion.as_slice().expect("layout");
        let [nk, nj, ni] = volume.shape();
        let hu_std = volume.hu.as_standard_layout();
        let hu = hu_std.as_slice().expect("standard layout");
        let oof = volume.out_of_field.as_ref();
        let mut labels = Array3::<u8>::zeros((nk, nj, ni));
        let plane_len = nj * ni;
        // the coarse box of everything written below (candidate, airway, effusion): the rest stays 0
        let Some(cb) = morph::bbox_where(d, |q| cand_s[q] != 0 || ex[q] || eff[q] != 0) else {
            return labels;
        };
        let (fj0, fj1) = (cb[1][0] * f[1], (cb[1][1] * f[1]).min(nj));
        labels
            .as_slice_mut()
            .expect("layout")
            .par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(k, lp)| {
                let ck = k / f[0];
                if !(cb[0][0]..cb[0][1]).contains(&ck) {
                    return;
                }
                let hp = &hu[k * plane_len..(k + 1) * plane_len];
                let words = oof.map(|m| m.slice_words(k));
                for j in fj0..fj1 {
                    let crow = (ck * d[1] + j / f[1]) * d[2];
                    // walk coarse voxels of this row; most are neither candidate nor excluded
                    for cq in cb[2][0]..cb[2][1] {
                        let q = crow + cq;
                        let (ia, ib) = (cq * f[2], ((cq + 1) * f[2]).min(ni));
                        if ex[q] {
                            // the airway exclusion holds at full resolution; marked so hole filling keeps out
                            lp[j * ni + ia..j * ni + ib].fill(EXCLUDED);
                            continue;
                        }
                        let side = cand_s[q];
                        if side == 0 {
                            if eff[q] != 0 {
                                // effusion: the fluid of the block, not air that belongs to nothing
                                let code = if eff[q] == LEFT_CODE {
                                    LEFT_EFFUSION
                                } else {
                                    RIGHT_EFFUSION
                                };
                                for p in j * ni + ia..j * ni + ib {
                                    let in_field =
                                        words.is_none_or(|w| (w[p / 64] >> (p % 64)) & 1 == 0);
                                    if hp[p] >= p_air && in_field {
                                        lp[p] = code;
                                    }
                                }
                            }
                            continue;
                        }
                        if sure[q] || (dis[q] && side == sides_s[q]) {
                            lp[j * ni + ia..j * ni + ib].fill(side);
                            continue;
                        }
                        for p in j * ni + ia..j * ni + ib {
                            let in_field = words.is_none_or(|w| (w[p / 64] >> (p % 64)) & 1 == 0);
                            if hp[p] < p_air && in_field {
                                lp[p] = side;
                            }
                        }
                    }
                }
            });
        sw.lap("refine: threshold band");
        let px = volume.geometry.pixel_spacing;
        let max_hole = (p.max_hole_mm2 / (px[0] * px[1])) as usize;
        // holes at full resolution can only be band pixels (candidate, not sure, not air): fill the
        // connected groups of them that touch nothing outside the candidate region and one lung only
        labels
            .as_slice_mut()
            .expect("layout")
            .par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(k, lp)| {
                let ck = k / f[0];
                if !(cb[0][0]..cb[0][1]).contains(&ck) {
                    return;
                }
                let side_at =
                    |pix: usize| cand_s[(ck * d[1] + pix / ni / f[1]) * d[2] + (pix % ni) / f[2]];
                let mut seen = vec![false; plane_len];
                let mut stack = Vec::new();
                let mut region = Vec::new();
                for j in fj0..fj1 {
                    let crow = (ck * d[1] + j / f[1]) * d[2];
                    for cq in cb[2][0]..cb[2][1] {
                        let q = crow + cq;
                        if cand_s[q] == 0 || sure[q] || ex[q] {
                            continue;
                        }
                        for start in j * ni + cq * f[2]..j * ni + ((cq + 1) * f[2]).min(ni) {
                            if lp[start] != 0 || seen[start] {
                                continue;
                            }
                            region.clear();
                            let (mut outside, mut border) = (false, 0u8);
                            seen[start] = true;
                            stack.push(start);
                            while let Some(pix) = stack.pop() {
                                region.push(pix);
                                let (pj, pi) = (pix / ni, pix % ni);
                                let nbs = [
                                    (pi > 0).then(|| pix - 1),
                                    (pi + 1 < ni).then(|| pix + 1),
                                    (pj > 0).then(|| pix - ni),
                                    (pj + 1 < nj).then(|| pix + ni),
                                ];
                                for nb in nbs {
                                    let Some(r) = nb else {
                                        outside = true;
                                        continue;
                                    };
                                    match lp[r] {
                                        RIGHT_CODE => border |= 1,
                                        LEFT_CODE => border |= 2,
                                        0 if side_at(r) != 0 => {
                                            if !seen[r] {
                                                seen[r] = true;
                                                stack.push(r);
                                            }
                                        }
                                        _ => outside = true,
                                    }
                                }
                            }
                            if !outside && region.len() <= max_hole && (border == 1 || border == 2)
                            {
                                for &pix in &region {
                                    lp[pix] = border;
                                }
                            }
                        }
                    }
                }
            });
        sw.lap("refine: fill holes");
        labels
    }
}
