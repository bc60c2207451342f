//! Per-lung measurements, coded segment descriptions and consecutive segment numbers.
//!
//! Each lung: volume (mL), mean HU and LAA% below −950 HU of the whole mask (dense disease included), and
//! the same of its aerated part (below [`super::LungParams::aerated_max_hu`]), so an emphysema index is
//! not diluted by a tumour or a consolidated lobe. Each recognised pleural effusion of at least
//! `min_effusion_ml`: its volume and mean HU as a "Pleural effusion" segment (SCT 60046008); smaller fluid
//! is only left out of the lung.

use super::{empty, VERSION};
use super::{LungSegmenter, LEFT_CODE, LEFT_EFFUSION, RIGHT_CODE, RIGHT_EFFUSION};
use crate::segment::codes::{
    ANATOMICAL_STRUCTURE, LEFT, LUNG, MORPHOLOGICALLY_ALTERED_STRUCTURE, MORPHOLOGICAL_OPERATIONS,
    PLEURAL_EFFUSION, RIGHT,
};
use crate::segment::{Measurement, Segment, SegmentDescription, Segmentation};
use crate::volume::Volume;
use ndarray::Array3;
use rayon::prelude::*;

/// Sums per internal code: voxels, HU sum, voxels below the LAA threshold, and the same for the aerated
/// voxels.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    n: usize,
    sum: i64,
    laa: usize,
    air_n: usize,
    air_sum: i64,
    air_laa: usize,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        self.n += o.n;
        self.sum += o.sum;
        self.laa += o.laa;
        self.air_n += o.air_n;
        self.air_sum += o.air_sum;
        self.air_laa += o.air_laa;
    }
}

const CODES: usize = 5;

fn m(name: &'static str, value: f64, unit: &'static str) -> Measurement {
    Measurement { name, value, unit }
}

impl LungSegmenter {
    /// Measurements, segment descriptions, consecutive segment numbers.
    pub(super) fn finish(
        &self,
        volume: &Volume,
        mut labels: Array3<u8>,
        mut notes: Vec<String>,
    ) -> Segmentation {
        let p = &self.params;
        let voxel_ml = volume.geometry.voxel_volume_mm3() / 1000.0;
        let plane_len = labels.shape()[1] * labels.shape()[2];
        let hu_std = volume.hu.as_standard_layout();
        let hu = hu_std.as_slice().expect("standard layout");
        let (laa_hu, air_max) = (p.laa_hu, p.aerated_max_hu);
        let acc = labels
            .as_slice_mut()
            .expect("layout")
            .par_chunks_mut(plane_len)
            .zip(hu.par_chunks(plane_len))
            .map(|(lp, hp)| {
                let mut a = [Acc::default(); CODES];
                // most of a slice is background: skip runs of 64 zero labels at once
                for (lc, hc) in lp.chunks_mut(64).zip(hp.chunks(64)) {
                    if lc.iter().fold(0u8, |x, &l| x | l) == 0 {
                        continue;
                    }
                    for (l, &h) in lc.iter_mut().zip(hc) {
                        if (*l as usize) < CODES && *l != 0 {
                            let e = &mut a[*l as usize];
                            e.n += 1;
                            e.sum += h as i64;
                            e.laa += (h < laa_hu) as usize;
                            if h < air_max {
                                e.air_n += 1;
                                e.air_sum += h as i64;
                                e.air_laa += (h < laa_hu) as usize;
                            }
                        } else if *l != 0 {
                            *l = 0; // EXCLUDED marker of the refinement
                        }
                    }
                }
                a
            })
            .reduce(
                || [Acc::default(); CODES],
                |mut a, b| {
                    for n in 0..CODES {
                        a[n].add(&b[n]);
                    }
                    a
                },
            );
        let mut segments = Vec::new();
        let mut remap = [0u8; CODES];
        let pct = |a: usize, n: usize| 100.0 * a as f64 / n.max(1) as f64;
        let mean = |s: i64, n: usize| s as f64 / n.max(1) as f64;
        for code in [RIGHT_CODE, LEFT_CODE] {
            let a = acc[code as usize];
            let ml = a.n as f64 * voxel_ml;
            if a.n == 0 || ml < 0.5 {
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
                    m("volume", ml, "mL"),
                    m("mean_density", mean(a.sum, a.n), "HU"),
                    m("laa950", pct(a.laa, a.n), "%"),
                    m("aerated_volume", a.air_n as f64 * voxel_ml, "mL"),
                    m("aerated_mean_density", mean(a.air_sum, a.air_n), "HU"),
                    m("aerated_laa950", pct(a.air_laa, a.air_n), "%"),
                ],
                points: Vec::new(),
            });
        }
        if segments.is_empty() {
            return empty(volume, notes);
        }
        for code in [RIGHT_EFFUSION, LEFT_EFFUSION] {
            let a = acc[code as usize];
            let ml = a.n as f64 * voxel_ml;
            if ml < p.disease.min_effusion_ml {
                continue; // left out of the lung, too small to report
            }
            let number = segments.len() as u8 + 1;
            remap[code as usize] = number;
            let (label, side) = if code == LEFT_EFFUSION {
                ("Left pleural effusion", LEFT)
            } else {
                ("Right pleural effusion", RIGHT)
            };
            notes.push(format!("{label}: {ml:.0} mL reported as a segment"));
            segments.push(Segment {
                number,
                description: SegmentDescription {
                    label: label.into(),
                    category: MORPHOLOGICALLY_ALTERED_STRUCTURE,
                    property_type: PLEURAL_EFFUSION,
                    modifier: Some(side),
                    algorithm_name: "segnode lung".into(),
                    algorithm_version: VERSION.into(),
                    algorithm_family: MORPHOLOGICAL_OPERATIONS,
                    cielab: Some([50000, 30000, 20000]),
                },
                measurements: vec![
                    m("volume", ml, "mL"),
                    m("mean_density", mean(a.sum, a.n), "HU"),
                ],
                points: Vec::new(),
            });
        }
        // only codes that occur need a new number (an unreported effusion is cleared)
        let moved = (1..CODES).any(|c| acc[c].n > 0 && remap[c] as usize != c);
        if moved {
            labels.par_mapv_inplace(|l| remap[(l as usize).min(CODES - 1)]);
        }
        notes.retain(|n| !n.starts_with("no lung found"));
        Segmentation {
            labels,
            segments,
            notes,
            details: None,
        }
    }
}
