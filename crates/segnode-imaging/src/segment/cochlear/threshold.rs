//! The metal level of a CBCT / CT volume: the device maximum (metal is usually clipped there), a
//! reference level of dense bone, and the threshold above which a voxel counts as metal.
//!
//! CBCT grey values are not calibrated like CT: dense petrous bone may sit anywhere from ~1000 to near the
//! top of the range. The threshold is therefore placed relative to the clipped maximum when metal is
//! clipped (a band just below it, wide enough for noise on the saturated core, narrow enough to stay
//! above bone), and half-way between bone and the maximum when it is not (extended-range CT).

use ndarray::{Array3, Axis};
use rayon::prelude::*;

/// Levels derived from the histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetalLevel {
    /// Highest value in the volume.
    pub device_max: i16,
    /// Voxels at exactly the maximum.
    pub saturated: usize,
    /// 99.5th percentile of the voxels at or above [`BONE_HU`] and below the maximum.
    pub bone_ref: f64,
    /// A blob of candidates is metal when it holds a voxel at or above this (the clipped maximum when
    /// metal clips, else half-way between dense bone and the brightest metal).
    pub threshold: i16,
    /// Voxels at or above this are metal candidates: the core threshold when metal clips, lower when
    /// it does not (see [`UNCLIPPED_CANDIDATE_SHARE`]).
    pub candidate: i16,
    /// Whether the metal looks clipped at the device maximum.
    pub clipped: bool,
}

/// Voxels at or above this are bone (or metal).
pub const BONE_HU: i16 = 300;
/// Unclipped metal: candidates from this share of the way from dense bone to the brightest voxel, a
/// blob kept when it reaches the half-way core threshold. The brightest voxel is one contact centred on
/// the grid; at 0.3–0.4 mm voxels the partial volume leaves other contacts and the lead between them
/// well below half of it (the array then fell apart into specks), while bone, noise and streaks stay
/// far below a quarter of the way to platinum.
pub const UNCLIPPED_CANDIDATE_SHARE: f64 = 0.25;
/// A device that clips metal clips it within a few thousand of dense bone (12-bit CBCT: 3071 or 4095
/// over bone of 1000–3000): a maximum farther above bone than this is an extended-range scale (the
/// 16-bit ceiling, 32767), whose few saturated voxels are the brightest contact centres, not a clipped
/// plateau that every contact reaches.
pub const MAX_CLIP_SPAN: f64 = 10_000.0;
/// No metal below this, whatever the histogram says.
const ABSOLUTE_FLOOR: f64 = 1500.0;

/// Why a volume has no metal level.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum NoMetal {
    #[error("no voxel above the bone range: no metal")]
    BelowBone,
    /// The device clips dense bone as well: a plateau at the maximum far larger than an electrode.
    #[error(
        "the device clips dense bone too ({saturated} voxels at its maximum {device_max}): metal cannot \
         be told from the otic capsule by its grey value"
    )]
    BoneClips { device_max: i16, saturated: usize },
    #[error("no voxel clearly above dense bone (maximum {device_max}, dense bone ≈ {bone_ref:.0}): no metal")]
    NoMargin { device_max: i16, bone_ref: f64 },
}

/// More voxels than this at the device maximum are more than any electrode array clips (mm³): a whole
/// array with its bloom is < 30 mm³; the otic capsule is several hundred.
pub const MAX_CLIPPED_METAL_MM3: f64 = 100.0;

/// The metal level, or why nothing in the volume can be metal; `voxel_mm3` is the voxel volume.
pub fn metal_level(hu: &Array3<i16>, voxel_mm3: f64) -> Result<MetalLevel, NoMetal> {
    let hist = histogram(hu);
    let off = 32768usize;
    let top = hist
        .iter()
        .rposition(|&c| c > 0)
        .ok_or(NoMetal::BelowBone)?;
    let device_max = (top as i64 - off as i64) as i16;
    // nothing this dense can be metal (and below bone the bone statistics have no range to look at)
    if (device_max as f64) < ABSOLUTE_FLOOR {
        return Err(NoMetal::BelowBone);
    }
    let saturated = hist[top] as usize;
    // bone statistics leave out the plateau at the maximum (clipped metal)
    let bone: u64 = hist[off + BONE_HU as usize..top].iter().sum();
    let bone_ref = if bone == 0 {
        BONE_HU as f64
    } else {
        let want = (bone as f64 * 0.995).ceil() as u64;
        let mut acc = 0u64;
        let mut v = BONE_HU as f64;
        for (n, &c) in hist[..top].iter().enumerate().skip(off + BONE_HU as usize) {
            acc += c;
            if acc >= want {
                v = n as f64 - off as f64;
                break;
            }
        }
        v
    };
    let d = device_max as f64;
    // clipped: a plateau of identical values at the top, well above bone but not as far above it as
    // an extended-range scale reaches
    let clipped = saturated >= 3 && d > bone_ref + 150.0 && d - bone_ref <= MAX_CLIP_SPAN;
    let (threshold, candidate) = if clipped {
        let delta = (0.1 * (d - bone_ref)).clamp(50.0, 300.0);
        (d - delta, d - delta)
    } else {
        let floor = (bone_ref + 400.0).max(2000.0);
        if d < floor + 100.0 {
            if hist[top] as f64 * voxel_mm3 > MAX_CLIPPED_METAL_MM3 {
                return Err(NoMetal::BoneClips {
                    device_max,
                    saturated: hist[top] as usize,
                });
            }
            return Err(NoMetal::NoMargin {
                device_max,
                bone_ref,
            });
        }
        (
            floor.max(bone_ref + 0.5 * (d - bone_ref)),
            floor.max(bone_ref + UNCLIPPED_CANDIDATE_SHARE * (d - bone_ref)),
        )
    };
    if threshold < ABSOLUTE_FLOOR {
        return Err(NoMetal::BelowBone);
    }
    Ok(MetalLevel {
        device_max,
        saturated,
        bone_ref,
        threshold: threshold.round() as i16,
        candidate: candidate.round() as i16,
        clipped,
    })
}

fn histogram(hu: &Array3<i16>) -> Vec<u64> {
    hu.axis_iter(Axis(0))
        .into_par_iter()
        .fold(
            || vec![0u64; 65536],
            |mut h, plane| {
                for &v in plane.iter() {
                    h[(v as i32 + 32768) as usize] += 1;
                }
                h
            },
        )
        .reduce(
            || vec![0u64; 65536],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_without_bone_has_no_metal_level() {
        // soft tissue only: the maximum is below the bone level (this used to slice past the maximum)
        let a = Array3::<i16>::from_elem((4, 8, 8), 40);
        assert_eq!(metal_level(&a, 0.001), Err(NoMetal::BelowBone));
        let mut b = a.clone();
        b[[1, 2, 3]] = 299;
        assert_eq!(metal_level(&b, 0.001), Err(NoMetal::BelowBone));
    }

    #[test]
    fn clipped_metal_sits_just_below_the_maximum_and_above_bone() {
        let mut a = Array3::<i16>::from_elem((4, 20, 20), 40);
        for j in 0..20 {
            for i in 0..10 {
                a[[1, j, i]] = 1900;
            }
        }
        for i in 0..5 {
            a[[2, 3, i]] = 3071;
        }
        let m = metal_level(&a, 0.001).unwrap();
        assert!(m.clipped);
        assert_eq!(m.device_max, 3071);
        assert!(m.threshold > 2000 && m.threshold < 3071, "{m:?}");
    }

    #[test]
    fn no_metal_in_plain_bone() {
        let mut a = Array3::<i16>::from_elem((4, 20, 20), 40);
        a[[1, 1, 1]] = 1400;
        assert!(metal_level(&a, 0.001).is_err());
    }
}
