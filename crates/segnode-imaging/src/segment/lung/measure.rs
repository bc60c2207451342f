//! Per-lung measurements (volume, mean HU, LAA% below −950 HU), coded segment descriptions and consecutive
//! segment numbers.

use super::{empty, VERSION};
use super::{LungSegmenter, LEFT_CODE, RIGHT_CODE};
use crate::segment::codes::{ANATOMICAL_STRUCTURE, LEFT, LUNG, MORPHOLOGICAL_OPERATIONS, RIGHT};
use crate::segment::{Measurement, Segment, SegmentDescription, Segmentation};
use crate::volume::Volume;
use ndarray::Array3;
use rayon::prelude::*;

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
        // count, sum HU, LAA count per side code, slice by slice in parallel
        let plane_len = labels.shape()[1] * labels.shape()[2];
        let hu_std = volume.hu.as_standard_layout();
        let hu = hu_std.as_slice().expect("standard layout");
        let laa_hu = p.laa_hu;
        let acc = labels
            .as_slice_mut()
            .expect("layout")
            .par_chunks_mut(plane_len)
            .zip(hu.par_chunks(plane_len))
            .map(|(lp, hp)| {
                let mut a = [(0usize, 0i64, 0usize); 3];
                for (l, &h) in lp.iter_mut().zip(hp) {
                    if *l == RIGHT_CODE || *l == LEFT_CODE {
                        let e = &mut a[*l as usize];
                        e.0 += 1;
                        e.1 += h as i64;
                        e.2 += (h < laa_hu) as usize;
                    } else if *l != 0 {
                        *l = 0; // EXCLUDED marker of the refinement
                    }
                }
                a
            })
            .reduce(
                || [(0usize, 0i64, 0usize); 3],
                |mut a, b| {
                    for n in 0..3 {
                        a[n].0 += b[n].0;
                        a[n].1 += b[n].1;
                        a[n].2 += b[n].2;
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
                        name: "mean_density",
                        value: sum as f64 / n as f64,
                        unit: "HU",
                    },
                    Measurement {
                        name: "laa950",
                        value: 100.0 * laa as f64 / n as f64,
                        unit: "%",
                    },
                ],
            });
        }
        if segments.is_empty() {
            return empty(volume, notes);
        }
        if remap != [0, RIGHT_CODE, LEFT_CODE] && remap != [0, RIGHT_CODE, 0] {
            labels.par_mapv_inplace(|l| remap[l as usize]);
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
