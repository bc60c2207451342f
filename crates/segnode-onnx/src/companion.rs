//! Channels that come from another series of the same study (MR T1c + FLAIR): the companion volume is
//! resampled onto the job's series grid in patient space (trilinear, through both series' geometry), so a
//! channel lines up voxel for voxel with the series the result is written on. Voxels the companion does
//! not cover take its lowest value (its background).

use ndarray::{Array3, Axis};
use rayon::prelude::*;

use segnode_imaging::volume::Volume;

use crate::grid::{corners, tap};

/// How far outside the companion's last voxel centre a sample still takes the edge value (voxels):
/// half a voxel, the extent the voxel itself covers.
const EDGE: f64 = 0.5;

/// `companion` on the grid of `target` (`[k, j, i]` of the target).
pub fn onto(target: &Volume, companion: &Volume) -> Array3<f32> {
    let [nk, nj, ni] = target.shape();
    let src = &companion.hu;
    let [sk, sj, si] = companion.shape();
    let low = src.iter().copied().min().unwrap_or(0) as f32;
    let tg = &target.geometry;
    let cg = &companion.geometry;
    let mut out = Array3::<f32>::zeros((nk, nj, ni));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(k, mut plane)| {
            for j in 0..nj {
                for i in 0..ni {
                    let p = tg.index_to_patient(k as f64, j as f64, i as f64);
                    let c = cg.patient_to_index(p);
                    let n = [sk, sj, si];
                    if (0..3).any(|a| c[a] < -EDGE || c[a] > (n[a] - 1) as f64 + EDGE) {
                        plane[[j, i]] = low;
                        continue;
                    }
                    let mut acc = 0.0f32;
                    for (at, w) in corners(tap(c[0], sk), tap(c[1], sj), tap(c[2], si)) {
                        acc += w * src[at] as f32;
                    }
                    plane[[j, i]] = acc;
                }
            }
        });
    out
}
