//! Sliding-window inference with Gaussian blending, as nnU-Net does it: patches tile the model grid
//! with the manifest's overlap, each patch's output is weighted by a Gaussian centred on the patch, and
//! every voxel's probability is the weighted mean of the patches that cover it.
//!
//! The convention (in the README, and reproduced independently by the tests):
//! - along an axis of `n` voxels and patch `p`: `n ≤ p` → one patch at 0 (the grid is padded at its end
//!   to `p` with each channel's lowest value); otherwise `steps = ceil((n − p) / (p·(1 − overlap))) + 1`
//!   patches at `round(i·(n − p)/(steps − 1))`;
//! - the weight of patch voxel `x` along an axis is `exp(−(x − (p − 1)/2)² / (2σ²))` with `σ = p/8`,
//!   multiplied over the three axes;
//! - the activation (softmax over classes, sigmoid) is applied to each patch before blending.
//!
//! Patches run in parallel on the worker's threads (rayon), `batch` patches per model call.

use ndarray::{s, Array3, Array4, Array5, ArrayView4, Axis};
use rayon::prelude::*;
use std::time::Instant;

use crate::error::OnnxError;
use crate::manifest::Activation;

/// Start positions of the patches along one axis.
pub fn starts(n: usize, p: usize, overlap: f64) -> Vec<usize> {
    if n <= p {
        return vec![0];
    }
    let step = (p as f64 * (1.0 - overlap)).max(1.0);
    let steps = ((n - p) as f64 / step).ceil() as usize + 1;
    let span = (n - p) as f64 / (steps - 1) as f64;
    (0..steps)
        .map(|i| (i as f64 * span).round() as usize)
        .collect()
}

/// The blending weight of each patch voxel.
pub fn gaussian(p: [usize; 3]) -> Array3<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let sigma = n as f64 / 8.0;
        (0..n)
            .map(|x| (-((x as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
            .collect()
    };
    let (a, b, c) = (axis(p[0]), axis(p[1]), axis(p[2]));
    Array3::from_shape_fn((p[0], p[1], p[2]), |(d, h, w)| (a[d] * b[h] * c[w]) as f32)
}

/// What the sliding window needs besides the input.
pub struct WindowPlan {
    pub patch: [usize; 3],
    pub overlap: f64,
    pub batch: usize,
    pub activation: Activation,
    /// Output channels of the model.
    pub classes: usize,
    /// Give up (with [`OnnxError::Timeout`]) once past this instant.
    pub deadline: Option<(Instant, f64)>,
}

/// Counts reported with the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub patches: usize,
    pub model_calls: usize,
}

/// Run `model` over `input` (`[channels, D, H, W]`) patch by patch; `model` takes
/// `[batch, channels, pD, pH, pW]` and gives `[batch, classes, pD, pH, pW]`. Returns the blended
/// probabilities `[classes, D, H, W]`.
pub fn infer(
    input: &Array4<f32>,
    plan: &WindowPlan,
    model: impl Fn(Array5<f32>) -> Result<Array5<f32>, OnnxError> + Sync,
) -> Result<(Array4<f32>, WindowStats), OnnxError> {
    let sh = input.shape();
    let (channels, n) = (sh[0], [sh[1], sh[2], sh[3]]);
    let p = plan.patch;
    // pad each axis shorter than the patch, with each channel's lowest value
    let padded_n: [usize; 3] = std::array::from_fn(|t| n[t].max(p[t]));
    let padded = if padded_n == n {
        None
    } else {
        let mut a = Array4::<f32>::zeros((channels, padded_n[0], padded_n[1], padded_n[2]));
        for c in 0..channels {
            let low = input
                .index_axis(Axis(0), c)
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            a.index_axis_mut(Axis(0), c).fill(low);
        }
        a.slice_mut(s![.., ..n[0], ..n[1], ..n[2]]).assign(input);
        Some(a)
    };
    let source: ArrayView4<f32> = padded.as_ref().map_or(input.view(), |a| a.view());
    let positions: Vec<[usize; 3]> = {
        let (a, b, c) = (
            starts(padded_n[0], p[0], plan.overlap),
            starts(padded_n[1], p[1], plan.overlap),
            starts(padded_n[2], p[2], plan.overlap),
        );
        let mut v = Vec::with_capacity(a.len() * b.len() * c.len());
        for &d in &a {
            for &h in &b {
                for &w in &c {
                    v.push([d, h, w]);
                }
            }
        }
        v
    };
    let weight = gaussian(p);
    let mut acc = Array4::<f32>::zeros((plan.classes, padded_n[0], padded_n[1], padded_n[2]));
    let mut wsum = Array3::<f32>::zeros((padded_n[0], padded_n[1], padded_n[2]));
    let batches: Vec<&[[usize; 3]]> = positions.chunks(plan.batch).collect();
    // a round: as many batches as there are threads, run in parallel, then blended in order
    let round = rayon::current_num_threads().max(1);
    let mut stats = WindowStats::default();
    for (r, group) in batches.chunks(round).enumerate() {
        if let Some((deadline, timeout_s)) = plan.deadline {
            if Instant::now() > deadline {
                return Err(OnnxError::Timeout {
                    timeout_s,
                    done: r * round * plan.batch,
                    total: positions.len(),
                });
            }
        }
        let outputs: Vec<Result<Array5<f32>, OnnxError>> = group
            .par_iter()
            .map(|batch| {
                let mut x = Array5::<f32>::zeros((plan.batch, channels, p[0], p[1], p[2]));
                for (b, at) in batch.iter().enumerate() {
                    x.index_axis_mut(Axis(0), b).assign(&source.slice(s![
                        ..,
                        at[0]..at[0] + p[0],
                        at[1]..at[1] + p[1],
                        at[2]..at[2] + p[2]
                    ]));
                }
                let y = model(x)?;
                let want = [plan.batch, plan.classes, p[0], p[1], p[2]];
                if y.shape() != want {
                    return Err(OnnxError::Inference(format!(
                        "model output shape {:?}, expected {want:?}",
                        y.shape()
                    )));
                }
                Ok(activate(y, plan.activation))
            })
            .collect();
        for (batch, y) in group.iter().zip(outputs) {
            let y = y?;
            stats.model_calls += 1;
            for (b, at) in batch.iter().enumerate() {
                stats.patches += 1;
                let region = s![
                    at[0]..at[0] + p[0],
                    at[1]..at[1] + p[1],
                    at[2]..at[2] + p[2]
                ];
                let out = y.index_axis(Axis(0), b);
                for c in 0..plan.classes {
                    let mut dst = acc.index_axis_mut(Axis(0), c);
                    let mut dst = dst.slice_mut(region);
                    ndarray::Zip::from(&mut dst)
                        .and(&out.index_axis(Axis(0), c))
                        .and(&weight)
                        .for_each(|a, v, g| *a += v * g);
                }
                let mut ws = wsum.slice_mut(region);
                ws += &weight;
            }
        }
    }
    ndarray::Zip::from(acc.lanes_mut(Axis(0)))
        .and(&wsum)
        .for_each(|mut lane, w| lane.mapv_inplace(|v| v / w));
    let acc = acc.slice(s![.., ..n[0], ..n[1], ..n[2]]).to_owned();
    Ok((acc, stats))
}

/// The activation over the class axis of `[batch, classes, …]`.
fn activate(mut y: Array5<f32>, a: Activation) -> Array5<f32> {
    match a {
        Activation::None => {}
        Activation::Sigmoid => y.mapv_inplace(|v| 1.0 / (1.0 + (-v).exp())),
        Activation::Softmax => {
            for mut lane in y.lanes_mut(Axis(1)) {
                let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                lane.mapv_inplace(|v| (v - max).exp());
                let sum: f32 = lane.sum();
                lane.mapv_inplace(|v| v / sum);
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_axis_evenly() {
        assert_eq!(starts(10, 32, 0.5), vec![0]);
        assert_eq!(starts(32, 32, 0.5), vec![0]);
        assert_eq!(starts(48, 32, 0.5), vec![0, 16]);
        assert_eq!(starts(50, 32, 0.5), vec![0, 9, 18]);
        assert_eq!(starts(100, 32, 0.0), vec![0, 23, 45, 68]);
        for (n, p, o) in [(77, 16, 0.5), (200, 64, 0.25), (65, 64, 0.9)] {
            let s = starts(n, p, o);
            assert_eq!(*s.first().unwrap(), 0);
            assert_eq!(*s.last().unwrap(), n - p);
            assert!(s.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= p));
        }
    }

    #[test]
    fn gaussian_peaks_at_the_centre() {
        let g = gaussian([8, 8, 8]);
        let centre = g[[3, 3, 3]];
        assert!(g.iter().all(|v| *v <= centre && *v > 0.0));
        assert_eq!(g[[3, 3, 3]], g[[4, 4, 4]]);
    }

    #[test]
    fn a_constant_model_blends_to_its_constant_and_identity_to_the_input() {
        let input = Array4::from_shape_fn((2, 9, 20, 17), |(c, d, h, w)| {
            (c * 1000 + d * 100 + h * 10 + w) as f32
        });
        let plan = WindowPlan {
            patch: [8, 8, 8],
            overlap: 0.5,
            batch: 2,
            activation: Activation::None,
            classes: 2,
            deadline: None,
        };
        let (out, stats) = infer(&input, &plan, |x| Ok(x)).unwrap();
        assert_eq!(out.shape(), input.shape());
        for (a, b) in out.iter().zip(input.iter()) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} {b}");
        }
        assert_eq!(stats.patches, 2 * 4 * 4);
        // softmax of equal logits is 1/classes everywhere
        let plan = WindowPlan {
            activation: Activation::Softmax,
            ..plan
        };
        let (out, _) = infer(&input, &plan, |x| Ok(Array5::zeros(x.raw_dim()))).unwrap();
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn a_volume_smaller_than_the_patch_is_padded_and_cropped_back() {
        let input = Array4::from_elem((1, 3, 4, 5), 2.0f32);
        let plan = WindowPlan {
            patch: [8, 8, 8],
            overlap: 0.5,
            batch: 1,
            activation: Activation::Sigmoid,
            classes: 1,
            deadline: None,
        };
        let (out, stats) = infer(&input, &plan, |x| Ok(x)).unwrap();
        assert_eq!(out.shape(), &[1, 3, 4, 5]);
        assert_eq!(stats.patches, 1);
        let want = 1.0 / (1.0 + (-2.0f32).exp());
        assert!(out.iter().all(|v| (v - want).abs() < 1e-6));
    }

    #[test]
    fn the_deadline_stops_between_patches() {
        let input = Array4::zeros((1, 16, 16, 16));
        let plan = WindowPlan {
            patch: [8, 8, 8],
            overlap: 0.5,
            batch: 1,
            activation: Activation::None,
            classes: 1,
            deadline: Some((Instant::now(), 0.0)),
        };
        std::thread::sleep(std::time::Duration::from_millis(2));
        let e = infer(&input, &plan, |x| Ok(x)).unwrap_err();
        assert!(
            matches!(
                e,
                OnnxError::Timeout {
                    done: 0,
                    total: 27,
                    ..
                }
            ),
            "{e}"
        );
    }
}
