//! The model's voxel grid and the way to it and back: the source volume `[k, j, i]` is permuted and
//! flipped so the tensor axes `[D, H, W]` point the way the manifest says, then resampled (trilinear) to
//! the model's spacing; the model's probabilities come back the same way (trilinear at each source
//! voxel) before any decision is taken, so labels are decided on the source grid.
//!
//! Convention (also in the README, and reproduced independently by the tests): along a tensor axis with
//! `n` oriented source voxels at spacing `s` and model spacing `t`, the model grid has
//! `max(1, round(n·s/t))` voxels and model voxel `x` sits at oriented source coordinate `x·t/s` (voxel
//! centres 0 coincide); samples beyond the last source voxel take the edge value.

use ndarray::{Array3, Array4, Axis};
use rayon::prelude::*;

use crate::manifest::Direction;
use segnode_imaging::volume::geometry::Geometry;

/// Source grid ↔ model grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Tensor axis `t` (D, H, W) is source axis `perm[t]` (0 = k, 1 = j, 2 = i) …
    pub perm: [usize; 3],
    /// … read backwards when `flip[t]`.
    pub flip: [bool; 3],
    /// `[k, j, i]` of the source volume.
    pub source_shape: [usize; 3],
    /// Voxel spacing along the tensor axes before resampling (mm).
    pub oriented_spacing: [f64; 3],
    /// `[D, H, W]` of the model grid.
    pub model_shape: [usize; 3],
    /// Spacing of the model grid along `[D, H, W]` (mm).
    pub model_spacing: [f64; 3],
}

/// One sample along one axis: the two neighbours and the weight of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tap {
    lo: usize,
    hi: usize,
    w: f32,
}

impl Tap {
    /// The two neighbours with their weights (a neighbour of weight 0 is left out).
    fn pairs(self) -> impl Iterator<Item = (usize, f32)> {
        [(self.lo, 1.0 - self.w), (self.hi, self.w)]
            .into_iter()
            .filter(|(_, w)| *w != 0.0)
    }
}

/// The up to 8 neighbours of a trilinear sample along three axes, with their weights.
pub(crate) fn corners(a: Tap, b: Tap, c: Tap) -> impl Iterator<Item = ([usize; 3], f32)> {
    a.pairs().flat_map(move |(x, wx)| {
        b.pairs()
            .flat_map(move |(y, wy)| c.pairs().map(move |(z, wz)| ([x, y, z], wx * wy * wz)))
    })
}

/// The sample at continuous index `x` of an axis of `n` voxels (clamped to the axis).
pub(crate) fn tap(x: f64, n: usize) -> Tap {
    let x = x.clamp(0.0, (n - 1) as f64);
    let lo = x.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    Tap {
        lo,
        hi,
        w: (x - lo as f64) as f32,
    }
}

impl Grid {
    /// The grid of a volume of `shape` with `geometry`, oriented as `orientation` (`None`: as stored)
    /// and resampled to `spacing` (`None`: as stored).
    pub fn new(
        shape: [usize; 3],
        geometry: &Geometry,
        orientation: Option<[Direction; 3]>,
        spacing: Option<[f64; 3]>,
    ) -> Grid {
        let dirs = [geometry.normal, geometry.col_dir, geometry.row_dir];
        let source_spacing = [
            geometry.slice_spacing,
            geometry.pixel_spacing[0],
            geometry.pixel_spacing[1],
        ];
        let (perm, flip) = match orientation {
            None => ([0, 1, 2], [false; 3]),
            Some(want) => best_assignment(&dirs, &want),
        };
        let oriented_spacing = perm.map(|a| source_spacing[a]);
        let model_spacing = spacing.unwrap_or(oriented_spacing);
        let mut model_shape = [0; 3];
        for t in 0..3 {
            let n = shape[perm[t]] as f64;
            model_shape[t] = ((n * oriented_spacing[t] / model_spacing[t]).round() as usize).max(1);
        }
        Grid {
            perm,
            flip,
            source_shape: shape,
            oriented_spacing,
            model_shape,
            model_spacing,
        }
    }

    /// Resample a source-grid array (`[k, j, i]`) onto the model grid (`[D, H, W]`), trilinear.
    pub fn to_model(&self, src: &Array3<f32>) -> Array3<f32> {
        // per tensor axis: for each model index, the taps on that axis's source axis
        let taps: Vec<Vec<Tap>> = (0..3)
            .map(|t| {
                let n = self.source_shape[self.perm[t]];
                let ratio = self.model_spacing[t] / self.oriented_spacing[t];
                (0..self.model_shape[t])
                    .map(|x| {
                        let mut tp = tap(x as f64 * ratio, n);
                        if self.flip[t] {
                            tp = Tap {
                                lo: n - 1 - tp.lo,
                                hi: n - 1 - tp.hi,
                                w: tp.w,
                            };
                        }
                        tp
                    })
                    .collect()
            })
            .collect();
        let [md, mh, mw] = self.model_shape;
        let mut out = Array3::<f32>::zeros((md, mh, mw));
        let perm = self.perm;
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(d, mut plane)| {
                let td = taps[0][d];
                for h in 0..mh {
                    let th = taps[1][h];
                    for w in 0..mw {
                        let tw = taps[2][w];
                        let mut acc = 0.0f32;
                        for ([id, ih, iw], wt) in corners(td, th, tw) {
                            let mut s = [0usize; 3];
                            s[perm[0]] = id;
                            s[perm[1]] = ih;
                            s[perm[2]] = iw;
                            acc += wt * src[s];
                        }
                        plane[[h, w]] = acc;
                    }
                }
            });
        out
    }

    /// Bring model-grid probabilities `[classes, D, H, W]` back to every source voxel (trilinear) and
    /// let `decide` turn the interpolated probabilities of a voxel into its value (`[k, j, i]`).
    pub fn decide_on_source(
        &self,
        probs: &Array4<f32>,
        decide: impl Fn(&[f32]) -> u8 + Sync,
    ) -> Array3<u8> {
        let classes = probs.shape()[0];
        // the tensor axis of each source axis
        let mut inv = [0usize; 3];
        for t in 0..3 {
            inv[self.perm[t]] = t;
        }
        // per source axis: for each source index, the taps on the model axis
        let taps: Vec<Vec<Tap>> = (0..3)
            .map(|a| {
                let t = inv[a];
                let n = self.source_shape[a];
                let ratio = self.oriented_spacing[t] / self.model_spacing[t];
                (0..n)
                    .map(|s| {
                        let o = if self.flip[t] { n - 1 - s } else { s };
                        tap(o as f64 * ratio, self.model_shape[t])
                    })
                    .collect()
            })
            .collect();
        let [nk, nj, ni] = self.source_shape;
        let mut out = Array3::<u8>::zeros((nk, nj, ni));
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(k, mut plane)| {
                let mut p = vec![0.0f32; classes];
                let tk = taps[0][k];
                for j in 0..nj {
                    let tj = taps[1][j];
                    for i in 0..ni {
                        let ti = taps[2][i];
                        p.iter_mut().for_each(|v| *v = 0.0);
                        for (src, w) in corners(tk, tj, ti) {
                            let mut m = [0usize; 4];
                            m[1 + inv[0]] = src[0];
                            m[1 + inv[1]] = src[1];
                            m[1 + inv[2]] = src[2];
                            for (c, v) in p.iter_mut().enumerate() {
                                m[0] = c;
                                *v += w * probs[m];
                            }
                        }
                        plane[[j, i]] = decide(&p);
                    }
                }
            });
        out
    }
}

/// The permutation of source axes onto tensor axes whose directions best match `want` (largest sum
/// of |cosines| over the six permutations), and which of them run backwards.
fn best_assignment(dirs: &[[f64; 3]; 3], want: &[Direction; 3]) -> ([usize; 3], [bool; 3]) {
    const PERMS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let score = |p: &[usize; 3]| -> f64 { (0..3).map(|t| dirs[p[t]][want[t].axis].abs()).sum() };
    let mut best = PERMS[0];
    for p in PERMS.iter().skip(1) {
        if score(p) > score(&best) + 1e-9 {
            best = *p;
        }
    }
    let flip = std::array::from_fn(|t| {
        let c = dirs[best[t]][want[t].axis];
        (c >= 0.0) != want[t].positive
    });
    (best, flip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_orientation;

    fn axial(spacing: [f64; 3]) -> Geometry {
        Geometry {
            origin: [0.0; 3],
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            pixel_spacing: [spacing[1], spacing[2]],
            slice_spacing: spacing[0],
        }
    }

    #[test]
    fn native_grid_at_native_spacing_is_the_identity() {
        let g = Grid::new([4, 5, 6], &axial([2.0, 1.0, 1.0]), None, None);
        assert_eq!(g.model_shape, [4, 5, 6]);
        let src = Array3::from_shape_fn((4, 5, 6), |(k, j, i)| (k * 100 + j * 10 + i) as f32);
        assert_eq!(g.to_model(&src), src);
    }

    #[test]
    fn lps_of_an_axial_series_is_native_and_ras_flips_rows_and_columns() {
        let geo = axial([2.0, 1.0, 1.0]);
        let g = Grid::new([4, 5, 6], &geo, parse_orientation("LPS").unwrap(), None);
        assert_eq!((g.perm, g.flip), ([0, 1, 2], [false; 3]));
        let r = Grid::new([4, 5, 6], &geo, parse_orientation("RAS").unwrap(), None);
        assert_eq!((r.perm, r.flip), ([0, 1, 2], [false, true, true]));
        let src = Array3::from_shape_fn((4, 5, 6), |(k, j, i)| (k * 100 + j * 10 + i) as f32);
        let m = r.to_model(&src);
        assert_eq!(m[[1, 0, 0]], src[[1, 4, 5]]);
        // a coronal series (rows toward -z) seen as LPS: D is the source row axis, flipped
        let coronal = Geometry {
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 0.0, -1.0],
            normal: [0.0, 1.0, 0.0],
            ..geo
        };
        let c = Grid::new([4, 5, 6], &coronal, parse_orientation("LPS").unwrap(), None);
        assert_eq!(c.perm, [1, 0, 2]);
        assert_eq!(c.flip, [true, false, false]);
        assert_eq!(c.model_shape, [5, 4, 6]);
    }

    #[test]
    fn resampling_halves_and_interpolates_linearly() {
        // 1 mm → 2 mm along W: 8 → 4 voxels at source 0, 2, 4, 6
        let g = Grid::new(
            [1, 1, 8],
            &axial([1.0, 1.0, 1.0]),
            None,
            Some([1.0, 1.0, 2.0]),
        );
        assert_eq!(g.model_shape, [1, 1, 4]);
        let src = Array3::from_shape_fn((1, 1, 8), |(_, _, i)| i as f32);
        let m = g.to_model(&src);
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 2.0, 4.0, 6.0]
        );
        // 1 mm → 0.75 mm: samples at 0, 0.75, 1.5 …, clamped at the edge
        let f = Grid::new(
            [1, 1, 3],
            &axial([1.0, 1.0, 1.0]),
            None,
            Some([1.0, 1.0, 0.75]),
        );
        assert_eq!(f.model_shape, [1, 1, 4]);
        let src = Array3::from_shape_fn((1, 1, 3), |(_, _, i)| (i * 4) as f32);
        let m = f.to_model(&src);
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 3.0, 6.0, 8.0]
        );
    }

    #[test]
    fn probabilities_come_back_to_every_source_voxel() {
        let geo = axial([1.0, 1.0, 1.0]);
        let g = Grid::new(
            [2, 3, 8],
            &geo,
            parse_orientation("RAS").unwrap(),
            Some([1.0, 1.0, 2.0]),
        );
        // class 1 probability rises along model W (which runs toward the right = source i reversed)
        let probs = Array4::from_shape_fn((2, 2, 3, 4), |(c, _, _, w)| {
            let p1 = w as f32 / 3.0;
            if c == 1 {
                p1
            } else {
                1.0 - p1
            }
        });
        let labels = g.decide_on_source(&probs, |p| u8::from(p[1] > 0.55));
        for k in 0..2 {
            for j in 0..3 {
                // source i = 7 is model w = 0 (p1 = 0), source i = 0 is model w = 3.5 → clamped 3
                let row: Vec<u8> = (0..8).map(|i| labels[[k, j, i]]).collect();
                assert_eq!(row, vec![1, 1, 1, 1, 0, 0, 0, 0]);
            }
        }
    }
}
