//! The manifest a site writes once beside its model file: what the model takes (channels, spacing,
//! orientation, intensity normalisation, patch and overlap), what it gives (activation, argmax or
//! threshold, label → coded segment, clean-up) and its name and version.
//!
//! This module only reads and checks the manifest on its own (values in range, labels unique, codes
//! present); whether it fits its model file is checked in `model.rs`, against the model's tensors.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::error::OnnxError;

/// A parsed, self-consistent manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: ModelSection,
    pub input: InputSection,
    pub output: OutputSection,
    /// Folder of the manifest file: `model.file` is relative to it.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// `[model]`: the file and the identity written into every result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The ONNX file, relative to the manifest's folder (or absolute).
    pub file: PathBuf,
    /// Name written as the SEG's algorithm name.
    pub name: String,
    /// Version written as the SEG's algorithm version.
    pub version: String,
    /// Name of the input tensor; the model's first input when absent.
    #[serde(default)]
    pub input_name: Option<String>,
    /// Name of the output tensor; the model's first output when absent.
    #[serde(default)]
    pub output_name: Option<String>,
}

/// `[input]`: how a series becomes the model's input tensor `[batch, channels, D, H, W]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// Modalities the model accepts (`["MR"]`, `["CT"]`); empty accepts any. A series of another
    /// modality fails its job with a message rather than feeding the model what it never saw.
    #[serde(default)]
    pub modality: Vec<String>,
    /// Voxel spacing the model was trained at, in mm, along the tensor axes `[D, H, W]`; the volume is
    /// resampled to it (trilinear) and the result back to the source grid. Absent: the native spacing.
    #[serde(default)]
    pub spacing_mm: Option<[f64; 3]>,
    /// Patient directions toward which the tensor axes `W, H, D` increase, as a three-letter code
    /// (`LPS`: W toward the patient's left, H toward posterior, D toward superior, which is how an
    /// axial series is usually stored; `RAS` flips W and H). `native` keeps the stored
    /// `[slice, row, column]` order. The volume is permuted and flipped, never rotated.
    #[serde(default = "native")]
    pub orientation: String,
    /// Sliding-window patch `[D, H, W]` in voxels of the model grid.
    pub patch: [usize; 3],
    /// Fraction of a patch shared with its neighbour along each axis, 0 ≤ overlap < 1 (0.5: nnU-Net's).
    #[serde(default = "half")]
    pub overlap: f64,
    /// Patches per model run; the model's batch axis must be 1, this, or dynamic.
    #[serde(default = "one")]
    pub batch: usize,
    /// One entry per model input channel, in channel order.
    pub channels: Vec<Channel>,
}

/// One input channel: the series' voxels normalised one way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    #[serde(default)]
    pub name: String,
    /// Another series of the same study feeds this channel: a fragment of its SeriesDescription
    /// (case-insensitive, e.g. `FLAIR`). Absent: the series the job runs on.
    #[serde(default)]
    pub series: Option<String>,
    pub normalise: Normalise,
}

/// Intensity normalisation of a channel (computed on the source grid, before resampling).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Normalise {
    /// Clip to `[low, high]` (HU for CT, stored values otherwise) and scale to 0…1.
    Window { low: f64, high: f64 },
    /// `(v − mean) / std` with mean and std over `over`.
    Zscore {
        #[serde(default)]
        over: Region,
    },
    /// Clip to the `low`/`high` percentiles (0–100) of `over`, then z-score over `over`.
    Percentile {
        low: f64,
        high: f64,
        #[serde(default)]
        over: Region,
    },
    /// Values as stored (HU for CT).
    None,
}

/// Which voxels the statistics of a normalisation are taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// Every voxel in the field of view.
    #[default]
    All,
    /// Voxels ≠ 0 (MR: the background is 0).
    Nonzero,
    /// Voxels above −500 (CT: the body, not the air around it).
    Body,
}

/// `[output]`: how the model's output tensor `[batch, classes, D, H, W]` becomes labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Applied to each patch's output before blending: `none` when the model ends in its own softmax
    /// or sigmoid.
    #[serde(default)]
    pub activation: Activation,
    /// `argmax`: each voxel takes its most probable class (class 0 background); `threshold`: each
    /// listed channel is on where its probability ≥ `threshold` (the most probable wins an overlap).
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "half")]
    pub threshold: f64,
    /// Output channel → segment. Channels not listed are background.
    pub labels: Vec<LabelSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    None,
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Argmax,
    Threshold,
}

/// One output channel as a coded segment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// Output channel index (the class value of `argmax`).
    pub channel: usize,
    pub name: String,
    pub category: Code,
    #[serde(rename = "type")]
    pub property_type: Code,
    #[serde(default)]
    pub modifier: Option<Code>,
    /// Keep only the largest connected component (6-connected).
    #[serde(default)]
    pub largest_component: bool,
    /// Drop connected components smaller than this (mm³).
    #[serde(default)]
    pub min_size_mm3: f64,
    /// Each connected component its own segment ("Nodule 1", "Nodule 2" …), for detection-style models.
    #[serde(default)]
    pub instances: bool,
}

/// A code as in a DICOM code sequence item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub code: String,
    pub scheme: String,
    pub meaning: String,
}

fn native() -> String {
    "native".into()
}
fn half() -> f64 {
    0.5
}
fn one() -> usize {
    1
}

/// Largest patch edge accepted (voxels): a 512³ float patch is already 0.5 GB per channel.
const MAX_PATCH: usize = 512;

impl Manifest {
    /// Read and check the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, OnnxError> {
        let text = std::fs::read_to_string(path).map_err(|e| OnnxError::Io {
            what: format!("reading manifest {}", path.display()),
            source: e,
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Manifest::parse(&text, &dir).map_err(|e| match e {
            OnnxError::Manifest(m) => OnnxError::Manifest(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parse and check manifest text; `dir` is where `model.file` is relative to.
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest, OnnxError> {
        let mut m: Manifest =
            toml::from_str(text).map_err(|e| OnnxError::Manifest(e.to_string().trim().into()))?;
        m.dir = dir.to_path_buf();
        m.check()?;
        Ok(m)
    }

    /// The model file's path.
    pub fn model_path(&self) -> PathBuf {
        if self.model.file.is_absolute() {
            self.model.file.clone()
        } else {
            self.dir.join(&self.model.file)
        }
    }

    /// The tensor axes as patient directions, or `None` for `native`.
    pub fn orientation(&self) -> Result<Option<[Direction; 3]>, OnnxError> {
        parse_orientation(&self.input.orientation)
    }

    fn check(&self) -> Result<(), OnnxError> {
        let bad = |m: String| Err(OnnxError::Manifest(m));
        if self.model.name.trim().is_empty() || self.model.version.trim().is_empty() {
            return bad("model.name and model.version must not be empty".into());
        }
        let i = &self.input;
        if i.channels.is_empty() {
            return bad("input.channels: at least one channel".into());
        }
        if i.patch.iter().any(|&p| p == 0 || p > MAX_PATCH) {
            return bad(format!(
                "input.patch {:?}: each edge must be 1…{MAX_PATCH}",
                i.patch
            ));
        }
        if !(0.0..1.0).contains(&i.overlap) {
            return bad(format!("input.overlap {}: must be in [0, 1)", i.overlap));
        }
        if i.batch == 0 || i.batch > 64 {
            return bad(format!("input.batch {}: must be 1…64", i.batch));
        }
        if let Some(s) = i.spacing_mm {
            if s.iter().any(|v| !(v.is_finite() && *v > 0.0 && *v <= 50.0)) {
                return bad(format!(
                    "input.spacing_mm {s:?}: each must be in (0, 50] mm"
                ));
            }
        }
        self.orientation()?;
        for (n, c) in i.channels.iter().enumerate() {
            if c.series.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return bad(format!(
                    "input.channels[{n}]: series must name a SeriesDescription fragment"
                ));
            }
            match c.normalise {
                Normalise::Window { low, high } if !(low < high) => {
                    return bad(format!("input.channels[{n}]: window low {low} ≥ high {high}"))
                }
                Normalise::Percentile { low, high, .. }
                    if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) || low >= high =>
                {
                    return bad(format!(
                        "input.channels[{n}]: percentiles {low}…{high} must satisfy 0 ≤ low < high ≤ 100"
                    ))
                }
                _ => {}
            }
        }
        let o = &self.output;
        if o.labels.is_empty() {
            return bad("output.labels: at least one label".into());
        }
        if !(o.threshold > 0.0 && o.threshold < 1.0) {
            return bad(format!(
                "output.threshold {}: must be in (0, 1)",
                o.threshold
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for l in &o.labels {
            if !seen.insert(l.channel) {
                return bad(format!("output.labels: channel {} listed twice", l.channel));
            }
            if o.mode == Mode::Argmax && l.channel == 0 {
                return bad("output.labels: channel 0 is the background of argmax".into());
            }
            if l.name.trim().is_empty() {
                return bad(format!("output.labels: channel {} has no name", l.channel));
            }
            for (what, c) in [
                ("category", Some(&l.category)),
                ("type", Some(&l.property_type)),
            ]
            .into_iter()
            .chain([("modifier", l.modifier.as_ref())])
            {
                if let Some(c) = c {
                    if c.code.trim().is_empty()
                        || c.scheme.trim().is_empty()
                        || c.meaning.trim().is_empty()
                    {
                        return bad(format!(
                            "output.labels: channel {} {what} needs code, scheme and meaning",
                            l.channel
                        ));
                    }
                }
            }
            if !(l.min_size_mm3.is_finite() && l.min_size_mm3 >= 0.0) {
                return bad(format!(
                    "output.labels: channel {} min_size_mm3 must be ≥ 0",
                    l.channel
                ));
            }
        }
        Ok(())
    }

    /// The SeriesDescription fragments of the channels fed by other series of the study.
    pub fn companion_series(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .input
            .channels
            .iter()
            .filter_map(|c| c.series.as_deref())
            .collect();
        v.dedup();
        v
    }

    /// The largest output channel a label names (the model must give at least one more).
    pub fn max_channel(&self) -> usize {
        self.output
            .labels
            .iter()
            .map(|l| l.channel)
            .max()
            .unwrap_or(0)
    }
}

/// A patient direction (LPS axes and their opposites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// 0 = x (L), 1 = y (P), 2 = z (S).
    pub axis: usize,
    /// `true` toward L, P or S; `false` toward R, A or I.
    pub positive: bool,
}

/// `LPS`, `RAS`, … → the directions of the tensor axes `[D, H, W]` (the code is given W first, as in
/// ITK / nibabel orientation codes).
pub fn parse_orientation(code: &str) -> Result<Option<[Direction; 3]>, OnnxError> {
    if code.eq_ignore_ascii_case("native") {
        return Ok(None);
    }
    let bad = || {
        OnnxError::Manifest(format!(
            "input.orientation {code:?}: `native` or three letters from L/R, P/A, S/I, one of each \
             (e.g. LPS, RAS)"
        ))
    };
    let letters: Vec<char> = code.to_ascii_uppercase().chars().collect();
    if letters.len() != 3 {
        return Err(bad());
    }
    let mut dirs = Vec::with_capacity(3);
    for c in letters {
        let d = match c {
            'L' => Direction {
                axis: 0,
                positive: true,
            },
            'R' => Direction {
                axis: 0,
                positive: false,
            },
            'P' => Direction {
                axis: 1,
                positive: true,
            },
            'A' => Direction {
                axis: 1,
                positive: false,
            },
            'S' => Direction {
                axis: 2,
                positive: true,
            },
            'I' => Direction {
                axis: 2,
                positive: false,
            },
            _ => return Err(bad()),
        };
        dirs.push(d);
    }
    let mut axes: Vec<usize> = dirs.iter().map(|d| d.axis).collect();
    axes.sort_unstable();
    if axes != [0, 1, 2] {
        return Err(bad());
    }
    // code order is W, H, D; tensor order is D, H, W
    Ok(Some([dirs[2], dirs[1], dirs[0]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"
[model]
file = "brain.onnx"
name = "BrainNet"
version = "1.2"

[input]
modality = ["MR"]
spacing_mm = [1.0, 1.0, 1.0]
orientation = "LPS"
patch = [32, 32, 32]
overlap = 0.5

[[input.channels]]
name = "T1"
normalise = { kind = "zscore", over = "nonzero" }

[[input.channels]]
name = "window"
normalise = { kind = "window", low = 0, high = 400 }

[output]
activation = "softmax"
labels = [
  { channel = 1, name = "Tumour", category = { code = "49755003", scheme = "SCT", meaning = "Morphologically Altered Structure" }, type = { code = "108369006", scheme = "SCT", meaning = "Neoplasm" }, largest_component = true },
]
"#;

    #[test]
    fn the_readme_style_example_parses() {
        let m = Manifest::parse(EXAMPLE, Path::new("/models")).unwrap();
        assert_eq!(m.model_path(), Path::new("/models/brain.onnx"));
        assert_eq!(m.input.channels.len(), 2);
        assert_eq!(
            m.input.channels[0].normalise,
            Normalise::Zscore {
                over: Region::Nonzero
            }
        );
        assert_eq!(m.output.activation, Activation::Softmax);
        assert_eq!(m.output.mode, Mode::Argmax);
        assert_eq!(m.max_channel(), 1);
        let o = m.orientation().unwrap().unwrap();
        // D toward S, H toward P, W toward L
        assert_eq!(
            o[0],
            Direction {
                axis: 2,
                positive: true
            }
        );
        assert_eq!(
            o[2],
            Direction {
                axis: 0,
                positive: true
            }
        );
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let cases = [
            ("overlap = 0.5", "overlap = 1.0", "input.overlap"),
            ("patch = [32, 32, 32]", "patch = [0, 32, 32]", "input.patch"),
            (
                "orientation = \"LPS\"",
                "orientation = \"LLS\"",
                "input.orientation",
            ),
            ("low = 0, high = 400", "low = 400, high = 0", "window low"),
            ("channel = 1,", "channel = 0,", "background"),
            ("name = \"Tumour\"", "name = \" \"", "has no name"),
            ("version = \"1.2\"", "version = \"\"", "model.version"),
            (
                "overlap = 0.5",
                "overlap = 0.5\ncolour = 1",
                "unknown field",
            ),
        ];
        for (from, to, says) in cases {
            let text = EXAMPLE.replacen(from, to, 1);
            assert_ne!(text, EXAMPLE, "{from}");
            let err = Manifest::parse(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{to}: {err}");
        }
    }

    #[test]
    fn orientation_codes() {
        assert_eq!(parse_orientation("native").unwrap(), None);
        let ras = parse_orientation("ras").unwrap().unwrap();
        assert_eq!(
            ras[2],
            Direction {
                axis: 0,
                positive: false
            }
        );
        assert_eq!(
            ras[1],
            Direction {
                axis: 1,
                positive: false
            }
        );
        assert!(parse_orientation("LP").is_err());
        assert!(parse_orientation("LPX").is_err());
    }
}
