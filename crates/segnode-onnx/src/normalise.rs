//! Intensity normalisation of one input channel, on the source grid, as the manifest asks: a window
//! scaled to 0…1, a z-score, or a percentile clip followed by a z-score. Statistics are taken over the
//! voxels the manifest names (all, non-zero, or the body) and never over out-of-field padding, which
//! takes the channel's lowest value so it reads as background.

use ndarray::Array3;

use crate::error::OnnxError;
use crate::manifest::{Normalise, Region};

/// HU above which a CT voxel is body rather than the air around it (`over = "body"`).
pub const BODY_HU: f32 = -500.0;

/// Smallest standard deviation a z-score divides by: a constant region maps to 0, not to infinity.
const MIN_STD: f64 = 1e-6;

/// The channel `how` makes of `values` (`[k, j, i]`); `outside[v]` marks out-of-field voxels.
pub fn normalise(
    values: &Array3<f32>,
    outside: impl Fn(usize) -> bool,
    how: &Normalise,
) -> Result<Array3<f32>, OnnxError> {
    let flat = values
        .as_slice()
        .ok_or_else(|| OnnxError::Input("volume not contiguous".into()))?;
    let in_region = |n: usize, v: f32, r: Region| {
        !outside(n)
            && match r {
                Region::All => true,
                Region::Nonzero => v != 0.0,
                Region::Body => v > BODY_HU,
            }
    };
    let sample = |r: Region| -> Vec<f32> {
        flat.iter()
            .enumerate()
            .filter(|(n, v)| in_region(*n, **v, r))
            .map(|(_, v)| *v)
            .collect()
    };
    let mut out = values.clone();
    match *how {
        Normalise::None => {}
        Normalise::Window { low, high } => {
            let (lo, hi) = (low as f32, high as f32);
            out.mapv_inplace(|v| (v.clamp(lo, hi) - lo) / (hi - lo));
        }
        Normalise::Zscore { over } => {
            let s = sample(over);
            let (mean, std) = mean_std(&s, over)?;
            out.mapv_inplace(|v| ((v as f64 - mean) / std) as f32);
        }
        Normalise::Percentile { low, high, over } => {
            let mut s = sample(over);
            if s.is_empty() {
                return Err(empty(over));
            }
            let lo = percentile(&mut s, low);
            let hi = percentile(&mut s, high);
            s.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            let (mean, std) = mean_std(&s, over)?;
            out.mapv_inplace(|v| ((v.clamp(lo, hi) as f64 - mean) / std) as f32);
        }
    }
    // padding reads as the channel's background
    let floor = out
        .iter()
        .enumerate()
        .filter(|(n, _)| !outside(*n))
        .map(|(_, v)| *v)
        .fold(f32::INFINITY, f32::min);
    if floor.is_finite() {
        if let Some(o) = out.as_slice_mut() {
            for (n, v) in o.iter_mut().enumerate() {
                if outside(n) {
                    *v = floor;
                }
            }
        }
    }
    Ok(out)
}

fn empty(r: Region) -> OnnxError {
    OnnxError::Input(format!(
        "no voxel in the normalisation region `{r:?}` (an empty or blank series?)"
    ))
}

fn mean_std(s: &[f32], r: Region) -> Result<(f64, f64), OnnxError> {
    if s.is_empty() {
        return Err(empty(r));
    }
    let n = s.len() as f64;
    let mean = s.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = s.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    Ok((mean, var.sqrt().max(MIN_STD)))
}

/// The `p`-th percentile (0–100) with linear interpolation between order statistics (numpy's default).
pub fn percentile(s: &mut [f32], p: f64) -> f32 {
    let n = s.len();
    let rank = p / 100.0 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (_, lo_v, _) = s.select_nth_unstable_by(lo, f32::total_cmp);
    let lo_v = *lo_v;
    if hi == lo {
        return lo_v;
    }
    let (_, hi_v, _) = s.select_nth_unstable_by(hi, f32::total_cmp);
    lo_v + ((*hi_v - lo_v) as f64 * (rank - lo as f64)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(v: &[f32]) -> Array3<f32> {
        Array3::from_shape_vec((1, 1, v.len()), v.to_vec()).unwrap()
    }

    #[test]
    fn window_clips_and_scales() {
        let out = normalise(
            &vol(&[-2000.0, -1000.0, 0.0, 400.0, 3000.0]),
            |_| false,
            &Normalise::Window {
                low: -1000.0,
                high: 400.0,
            },
        )
        .unwrap();
        let want = [0.0, 0.0, 1000.0 / 1400.0, 1.0, 1.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }

    #[test]
    fn zscore_over_nonzero_ignores_background_and_padding() {
        let v = vol(&[0.0, 0.0, 10.0, 20.0, 30.0, 999.0]);
        let out = normalise(
            &v,
            |n| n == 5,
            &Normalise::Zscore {
                over: Region::Nonzero,
            },
        )
        .unwrap();
        // mean 20, std sqrt(200/3)
        let std = (200.0f64 / 3.0).sqrt();
        assert!((out[[0, 0, 3]]).abs() < 1e-6);
        assert!((out[[0, 0, 4]] as f64 - 10.0 / std).abs() < 1e-5);
        // padding takes the lowest value in the field of view (the background's)
        assert_eq!(out[[0, 0, 5]], out[[0, 0, 0]]);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let mut s: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        assert_eq!(percentile(&mut s, 0.0), 1.0);
        assert_eq!(percentile(&mut s, 100.0), 10.0);
        assert!((percentile(&mut s, 25.0) - 3.25).abs() < 1e-6);
        assert!((percentile(&mut s, 99.5) - 9.955).abs() < 1e-5);
    }

    #[test]
    fn an_empty_region_is_an_input_error() {
        let e = normalise(
            &vol(&[0.0, 0.0]),
            |_| false,
            &Normalise::Zscore {
                over: Region::Nonzero,
            },
        );
        assert!(e.unwrap_err().to_string().contains("no voxel"));
    }
}
