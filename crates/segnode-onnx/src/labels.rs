//! From probabilities to coded segments: the per-voxel decision (argmax, or a threshold per channel),
//! then per label the clean-up the manifest asks for (largest component, minimum size) and, for
//! detection-style models, one segment per connected component.

use ndarray::Array3;

use segnode_imaging::segment::codes::{intern, CodedConcept, ARTIFICIAL_INTELLIGENCE};
use segnode_imaging::segment::morph::label6;
use segnode_imaging::segment::{Measurement, Segment, SegmentDescription};

use crate::manifest::{Code, LabelSpec, Manifest, Mode};

/// Value of a voxel no listed label claims.
pub const BACKGROUND: u8 = 0;

/// The voxel decision of `manifest`: `0` for background, `channel + 1` for a listed label's channel.
pub fn decider(manifest: &Manifest) -> impl Fn(&[f32]) -> u8 + Sync {
    let mode = manifest.output.mode;
    let threshold = manifest.output.threshold as f32;
    let listed: Vec<bool> = {
        let mut v = vec![false; manifest.max_channel() + 1];
        for l in &manifest.output.labels {
            v[l.channel] = true;
        }
        v
    };
    move |p: &[f32]| -> u8 {
        let pick = match mode {
            Mode::Argmax => {
                let mut best = 0;
                for (c, v) in p.iter().enumerate() {
                    if *v > p[best] {
                        best = c;
                    }
                }
                Some(best)
            }
            Mode::Threshold => p
                .iter()
                .enumerate()
                .filter(|(c, v)| **v >= threshold && listed.get(*c).copied().unwrap_or(false))
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(c, _)| c),
        };
        match pick {
            Some(c) if listed.get(c).copied().unwrap_or(false) => (c + 1) as u8,
            _ => BACKGROUND,
        }
    }
}

fn concept(c: &Code) -> CodedConcept {
    CodedConcept::new(
        intern(c.code.trim()),
        intern(c.scheme.trim()),
        intern(c.meaning.trim()),
    )
}

/// Display colours for segments, CIELab scaled to 0…65535 (distinct hues at mid lightness).
const PALETTE: [[u16; 3]; 6] = [
    [35000, 53000, 45000],
    [40000, 25000, 50000],
    [45000, 30000, 20000],
    [50000, 45000, 55000],
    [30000, 40000, 20000],
    [55000, 20000, 35000],
];

/// Segments of the decided volume `decided` (values from [`decider`]), numbered from 1 in the order
/// of `manifest.output.labels` (instances in scan order). `voxel_ml` is one voxel's volume in mL.
/// Returns the label map, the segments and notes on what the clean-up removed.
pub fn segments(
    decided: &Array3<u8>,
    manifest: &Manifest,
    voxel_ml: f64,
) -> (Array3<u8>, Vec<Segment>, Vec<String>) {
    let mut labels = Array3::<u8>::zeros(decided.raw_dim());
    let mut segments: Vec<Segment> = Vec::new();
    let mut notes = Vec::new();
    let voxel_mm3 = voxel_ml * 1000.0;
    for spec in &manifest.output.labels {
        let value = (spec.channel + 1) as u8;
        let mask = decided.mapv(|v| v == value);
        let (comp, sizes) = label6(&mask);
        if sizes.is_empty() {
            continue;
        }
        let min_vox = (spec.min_size_mm3 / voxel_mm3).ceil() as usize;
        let largest = sizes
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| **s)
            .map(|(n, _)| n + 1);
        let keep: Vec<bool> =
            std::iter::once(false)
                .chain(sizes.iter().enumerate().map(|(n, s)| {
                    *s >= min_vox && (!spec.largest_component || Some(n + 1) == largest)
                }))
                .collect();
        let dropped = sizes.len() - keep.iter().filter(|k| **k).count();
        if dropped > 0 {
            notes.push(format!(
                "{}: {dropped} of {} components removed by the clean-up",
                spec.name,
                sizes.len()
            ));
        }
        // component id → segment number
        let mut number_of = vec![0u8; sizes.len() + 1];
        let groups: Vec<Vec<usize>> = if spec.instances {
            (1..=sizes.len())
                .filter(|c| keep[*c])
                .map(|c| vec![c])
                .collect()
        } else {
            let all: Vec<usize> = (1..=sizes.len()).filter(|c| keep[*c]).collect();
            if all.is_empty() {
                vec![]
            } else {
                vec![all]
            }
        };
        for (n, group) in groups.iter().enumerate() {
            if segments.len() >= u8::MAX as usize {
                notes.push(format!(
                    "{}: more than 255 segments; the rest are left out",
                    spec.name
                ));
                break;
            }
            let number = (segments.len() + 1) as u8;
            for c in group {
                number_of[*c] = number;
            }
            let voxels: usize = group.iter().map(|c| sizes[*c - 1]).sum();
            let label = if spec.instances {
                format!("{} {}", spec.name, n + 1)
            } else {
                spec.name.clone()
            };
            segments.push(segment(
                spec,
                manifest,
                number,
                label,
                voxels as f64 * voxel_ml,
            ));
        }
        ndarray::Zip::from(&mut labels).and(&comp).for_each(|l, c| {
            let n = number_of[*c as usize];
            if n != 0 {
                *l = n;
            }
        });
    }
    (labels, segments, notes)
}

fn segment(spec: &LabelSpec, manifest: &Manifest, number: u8, label: String, ml: f64) -> Segment {
    Segment {
        number,
        description: SegmentDescription {
            label,
            category: concept(&spec.category),
            property_type: concept(&spec.property_type),
            modifier: spec.modifier.as_ref().map(concept),
            algorithm_name: manifest.model.name.clone(),
            algorithm_version: manifest.model.version.clone(),
            algorithm_family: ARTIFICIAL_INTELLIGENCE,
            cielab: Some(PALETTE[(number as usize - 1) % PALETTE.len()]),
        },
        measurements: vec![Measurement {
            name: "volume",
            value: ml,
            unit: "mL",
        }],
        points: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(mode: &str, extra: &str) -> Manifest {
        let text = format!(
            r#"
[model]
file = "m.onnx"
name = "Net"
version = "1"
[input]
patch = [8, 8, 8]
channels = [{{ normalise = {{ kind = "none" }} }}]
[output]
mode = "{mode}"
labels = [
  {{ channel = 1, name = "Nodule", category = {{ code = "49755003", scheme = "SCT", meaning = "Morphologically Altered Structure" }}, type = {{ code = "27925004", scheme = "SCT", meaning = "Nodule" }} {extra} }},
  {{ channel = 2, name = "Lung", category = {{ code = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}, type = {{ code = "39607008", scheme = "SCT", meaning = "Lung" }} }},
]
"#
        );
        Manifest::parse(&text, Path::new(".")).unwrap()
    }

    #[test]
    fn argmax_and_threshold_decisions() {
        let m = manifest("argmax", "");
        let d = decider(&m);
        assert_eq!(d(&[0.5, 0.3, 0.2]), BACKGROUND);
        assert_eq!(d(&[0.2, 0.5, 0.3]), 2);
        assert_eq!(d(&[0.2, 0.3, 0.5]), 3);
        // a class the manifest does not list is background
        assert_eq!(d(&[0.1, 0.1, 0.1, 0.7]), BACKGROUND);
        let t = manifest("threshold", "");
        let d = decider(&t);
        assert_eq!(d(&[0.9, 0.4, 0.45]), BACKGROUND);
        assert_eq!(d(&[0.9, 0.6, 0.7]), 3);
        assert_eq!(d(&[0.9, 0.6, 0.1]), 2);
    }

    fn two_blobs() -> Array3<u8> {
        let mut d = Array3::<u8>::zeros((4, 10, 10));
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..3 {
                    d[[k, j, i]] = 2; // 36 voxels
                }
            }
        }
        d[[0, 8, 8]] = 2; // 1 voxel
        d[[3, 8, 1]] = 3;
        d
    }

    #[test]
    fn instances_and_clean_up() {
        let d = two_blobs();
        let (labels, segs, notes) = segments(&d, &manifest("argmax", ", instances = true"), 0.001);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].description.label, "Nodule 1");
        assert_eq!(segs[1].description.label, "Nodule 2");
        assert_eq!(segs[2].description.label, "Lung");
        assert!((segs[0].measurements[0].value - 0.036).abs() < 1e-9);
        assert_eq!(labels[[0, 8, 8]], 2);
        assert_eq!(labels[[3, 8, 1]], 3);
        assert!(notes.is_empty());

        let (labels, segs, notes) =
            segments(&d, &manifest("argmax", ", largest_component = true"), 0.001);
        assert_eq!(segs.len(), 2);
        assert_eq!(labels[[0, 8, 8]], 0);
        assert!((segs[0].measurements[0].value - 0.036).abs() < 1e-9);
        assert_eq!(notes, ["Nodule: 1 of 2 components removed by the clean-up"]);

        let (_, segs, _) = segments(&d, &manifest("argmax", ", min_size_mm3 = 2.0"), 0.001);
        assert!((segs[0].measurements[0].value - 0.036).abs() < 1e-9);
        assert_eq!(segs[0].description.algorithm_name, "Net");
    }
}
