//! `onnx:<name>` as a [`Segmenter`]: volume → channels (normalised, oriented, resampled) → sliding
//! window through the model → probabilities back on the source grid → coded segments, within the
//! job's time and memory budget. The job result's `details` name the model, its version and the
//! SHA-256 of its file.

use ndarray::{Array4, Axis};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use segnode_imaging::segment::codes::intern;
use segnode_imaging::segment::{SegmentError, Segmentation, Segmenter};
use segnode_imaging::volume::Volume;

use crate::companion::onto;
use crate::error::OnnxError;
use crate::grid::Grid;
use crate::labels::{decider, segments, BACKGROUND};
use crate::manifest::Manifest;
use crate::model::cached;
use crate::normalise::normalise;
use crate::window::{infer, WindowPlan};

/// How one `onnx:<name>` pipeline runs (from segnode's configuration, not the manifest: the site's
/// operator sets the budget, the model's author the manifest).
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// The job fails once inference has taken this long (checked between rounds of patches).
    pub timeout: Duration,
    /// The job is refused before inference when its arrays would need more than this (MiB).
    pub max_memory_mb: u64,
}

/// A site's ONNX model behind the segmenter trait.
pub struct OnnxSegmenter {
    name: &'static str,
    version: &'static str,
    manifest: PathBuf,
    limits: RunLimits,
    /// Write the model-grid input and probabilities here (`segnode segment --dump-dir`).
    dump: Option<PathBuf>,
    /// Other series of the study, by the SeriesDescription fragment a channel names.
    companions: Vec<(String, Volume)>,
}

impl OnnxSegmenter {
    /// `name` is the pipeline name (`onnx:brain`); the manifest is read here for the version and again
    /// (with its model, cached) when a volume is segmented.
    pub fn new(name: &str, manifest: &Path, limits: RunLimits) -> OnnxSegmenter {
        let version =
            Manifest::load(manifest).map_or_else(|_| "unknown".to_string(), |m| m.model.version);
        OnnxSegmenter {
            name: intern(name),
            version: intern(&version),
            manifest: manifest.to_path_buf(),
            limits,
            dump: None,
            companions: Vec::new(),
        }
    }

    /// The other series of the study the manifest's channels name (`input.channels.series`), each
    /// under the fragment it was found by.
    pub fn with_companions(mut self, companions: Vec<(String, Volume)>) -> OnnxSegmenter {
        self.companions = companions;
        self
    }

    /// Also write the model's input and blended output (see `dump`).
    pub fn with_dump(mut self, dir: Option<PathBuf>) -> OnnxSegmenter {
        self.dump = dir;
        self
    }

    fn run(&self, volume: &Volume) -> Result<Segmentation, OnnxError> {
        let started = Instant::now();
        let (m, model) = cached(&self.manifest)?;
        let loaded_ms = started.elapsed().as_millis() as u64;
        let modality = volume.series.modality.trim();
        if !m.input.modality.is_empty()
            && !m
                .input
                .modality
                .iter()
                .any(|x| x.eq_ignore_ascii_case(modality))
        {
            return Err(OnnxError::Input(format!(
                "the model takes {} series, this one is {modality:?}",
                m.input.modality.join(" / ")
            )));
        }
        let shape = volume.shape();
        let grid = Grid::new(
            shape,
            &volume.geometry,
            m.orientation()?,
            m.input.spacing_mm,
        );
        let channels = m.input.channels.len();
        let src_n: usize = shape.iter().product();
        let mod_n: usize = grid.model_shape.iter().product();
        let patch_n: usize = m.input.patch.iter().product();
        let threads = rayon::current_num_threads().max(1);
        // f32 source channel + its normalised copy, model-grid input, probabilities and weights, the
        // decided and labelled source grids, and the patches of one parallel round (in and out)
        let need = 4 * (2 * src_n + channels * mod_n + (model.classes + 1) * mod_n)
            + 2 * src_n
            + 4 * threads * m.input.batch * patch_n * (channels + 2 * model.classes);
        let need_mb = (need as u64).div_ceil(1 << 20);
        if need_mb > self.limits.max_memory_mb {
            return Err(OnnxError::Memory {
                need_mb,
                budget_mb: self.limits.max_memory_mb,
            });
        }
        let (nj, ni) = (shape[1], shape[2]);
        let outside = |n: usize| {
            volume
                .out_of_field
                .as_ref()
                .is_some_and(|f| f.get(n / (nj * ni), (n / ni) % nj, n % ni))
        };
        let values = volume.hu.mapv(|v| v as f32);
        let mut input = Array4::<f32>::zeros((
            channels,
            grid.model_shape[0],
            grid.model_shape[1],
            grid.model_shape[2],
        ));
        for (c, ch) in m.input.channels.iter().enumerate() {
            let norm = match &ch.series {
                None => normalise(&values, outside, &ch.normalise)?,
                Some(fragment) => {
                    let other = self
                        .companions
                        .iter()
                        .find(|(f, _)| f.eq_ignore_ascii_case(fragment))
                        .map(|(_, v)| v)
                        .ok_or_else(|| {
                            OnnxError::Input(format!(
                                "channel {c} ({}) takes the study's series described {fragment:?}, \
                                 which was not given",
                                ch.name
                            ))
                        })?;
                    normalise(&onto(volume, other), outside, &ch.normalise)?
                }
            };
            input
                .index_axis_mut(Axis(0), c)
                .assign(&grid.to_model(&norm));
        }
        drop(values);
        let plan = WindowPlan {
            patch: m.input.patch,
            overlap: m.input.overlap,
            batch: m.input.batch,
            activation: m.output.activation,
            classes: model.classes,
            deadline: Some((
                started + self.limits.timeout,
                self.limits.timeout.as_secs_f64(),
            )),
        };
        let t_infer = Instant::now();
        let (probs, stats) = infer(&input, &plan, |x| model.run(x))?;
        let infer_ms = t_infer.elapsed().as_millis() as u64;
        if let Some(dir) = &self.dump {
            dump(dir, &input, &probs, &grid)?;
        }
        drop(input);
        let mut decided = grid.decide_on_source(&probs, decider(&m));
        drop(probs);
        if volume.out_of_field.is_some() {
            for ((k, j, i), v) in decided.indexed_iter_mut() {
                if volume.is_out_of_field(k, j, i) {
                    *v = BACKGROUND;
                }
            }
        }
        let g = &volume.geometry;
        let voxel_ml = g.pixel_spacing[0] * g.pixel_spacing[1] * g.slice_spacing / 1000.0;
        let (labels, segs, mut notes) = segments(&decided, &m, voxel_ml);
        if segs.is_empty() {
            notes.push(format!("{} found nothing", m.model.name));
        }
        let details = json!({
            "model": {
                "name": m.model.name,
                "version": m.model.version,
                "file": model.info.file,
                "sha256": model.info.sha256,
            },
            "companions": self
                .companions
                .iter()
                .map(|(f, v)| json!({ "series": f, "series_instance_uid": v.series.series_instance_uid }))
                .collect::<Vec<_>>(),
            "model_grid": grid.model_shape,
            "model_spacing_mm": grid.model_spacing,
            "classes": model.classes,
            "patches": stats.patches,
            "model_calls": stats.model_calls,
            "load_model_ms": loaded_ms,
            "inference_ms": infer_ms,
        });
        Ok(Segmentation {
            labels,
            segments: segs,
            notes,
            details: Some(details),
        })
    }
}

/// `input.f32` (`[channels, D, H, W]`), `probabilities.f32` (`[classes, D, H, W]`), little-endian
/// float32 in C order, and `grid.json` with the shapes and the grid mapping.
fn dump(
    dir: &Path,
    input: &Array4<f32>,
    probs: &Array4<f32>,
    grid: &Grid,
) -> Result<(), OnnxError> {
    let io = |what: &str, e: std::io::Error| OnnxError::Io {
        what: format!("{what} in {}", dir.display()),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating the dump folder", e))?;
    let raw = |a: &Array4<f32>| -> Vec<u8> { a.iter().flat_map(|v| v.to_le_bytes()).collect() };
    std::fs::write(dir.join("input.f32"), raw(input)).map_err(|e| io("writing input.f32", e))?;
    std::fs::write(dir.join("probabilities.f32"), raw(probs))
        .map_err(|e| io("writing probabilities.f32", e))?;
    let meta = json!({
        "input_shape": input.shape(),
        "probabilities_shape": probs.shape(),
        "perm": grid.perm,
        "flip": grid.flip,
        "source_shape": grid.source_shape,
        "oriented_spacing_mm": grid.oriented_spacing,
        "model_shape": grid.model_shape,
        "model_spacing_mm": grid.model_spacing,
    });
    std::fs::write(dir.join("grid.json"), meta.to_string()).map_err(|e| io("writing grid.json", e))
}

impl Segmenter for OnnxSegmenter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> &'static str {
        self.version
    }

    fn nothing_found(&self) -> String {
        format!("{} found nothing", self.name)
    }

    fn segment(&self, volume: &Volume) -> Result<Segmentation, SegmentError> {
        self.run(volume)
            .map_err(|e| SegmentError::External(format!("{}: {e}", self.name)))
    }
}
