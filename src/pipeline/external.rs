//! `external:<name>` pipelines: a site's own model, run as a command, behind the [`Segmenter`] trait.
//!
//! The exchange contract (also in the README):
//!
//! - segnode makes a work folder with `input/` and `output/` and runs the configured command there, with
//!   `{input}` / `{output}` in its arguments replaced by the two paths (also in the environment as
//!   `SEGNODE_INPUT` / `SEGNODE_OUTPUT`), in its own process group, killed at `timeout_s`.
//! - `input/volume.raw`: the series as int16 little-endian Hounsfield units, C order `[slice][row][column]`,
//!   slices sorted along the slice normal; `input/volume.json`: `shape` `[slices, rows, columns]`,
//!   `spacing_mm` (same order), `affine_kji` (4×4, `[k, j, i, 1]` → LPS mm), `series_instance_uid`,
//!   `sop_instance_uids` (one per slice, in array order; for a multi-frame source also `frame_numbers`,
//!   1-based, one per slice); `input/dicom/`: links to the original files (a multi-frame file once).
//! - The model writes `output/labels.raw` (uint8, same shape and order; 0 = background) and
//!   `output/segments.json`: `{"algorithm": {"name", "version"}, "segments": [{"label": 1, "name": "…",
//!   "category": {"code", "scheme", "meaning"}, "type": {…}, "modifier": {…} (optional)}]}`.
//! - Exit status 0 means success. A label in the volume that `segments.json` does not describe, a file of
//!   the wrong size, or a missing file fails the job with a message saying which.

use serde::Deserialize;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segnode_imaging::segment::codes::{intern, CodedConcept, ARTIFICIAL_INTELLIGENCE};
use segnode_imaging::segment::{
    Segment, SegmentDescription, SegmentError, Segmentation, Segmenter,
};
use segnode_imaging::volume::Volume;

/// A site model run as a command (the contract is in the README and this module).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSettings {
    /// Program and arguments; `{input}` and `{output}` are replaced by the exchange folders.
    pub command: Vec<String>,
    pub timeout_s: f64,
}

/// A configured external model.
pub struct ExternalSegmenter {
    name: &'static str,
    command: Vec<String>,
    timeout: Duration,
    work_root: PathBuf,
}

#[derive(Deserialize)]
struct ModelCode {
    code: String,
    scheme: String,
    meaning: String,
}

#[derive(Deserialize)]
struct ModelSegment {
    label: u8,
    name: String,
    category: ModelCode,
    #[serde(rename = "type")]
    property_type: ModelCode,
    #[serde(default)]
    modifier: Option<ModelCode>,
}

#[derive(Deserialize, Default)]
struct ModelAlgorithm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
struct ModelOutput {
    #[serde(default)]
    algorithm: ModelAlgorithm,
    segments: Vec<ModelSegment>,
}

fn concept(c: &ModelCode) -> CodedConcept {
    CodedConcept::new(
        intern(c.code.trim()),
        intern(c.scheme.trim()),
        intern(c.meaning.trim()),
    )
}

fn failed(msg: impl Into<String>) -> SegmentError {
    SegmentError::External(msg.into())
}

impl ExternalSegmenter {
    pub fn new(name: &str, settings: &ExternalSettings, work_root: &Path) -> ExternalSegmenter {
        ExternalSegmenter {
            name: intern(&format!("external:{name}")),
            command: settings.command.clone(),
            timeout: Duration::from_secs_f64(settings.timeout_s),
            work_root: work_root.to_path_buf(),
        }
    }

    fn write_inputs(&self, volume: &Volume, input: &Path) -> Result<(), SegmentError> {
        let io = |what: &str, e: std::io::Error| {
            failed(format!("preparing the model input ({what}): {e}"))
        };
        let shape = volume.shape();
        let mut raw = std::io::BufWriter::new(
            std::fs::File::create(input.join("volume.raw")).map_err(|e| io("volume.raw", e))?,
        );
        for v in volume.hu.iter() {
            raw.write_all(&v.to_le_bytes())
                .map_err(|e| io("volume.raw", e))?;
        }
        raw.flush().map_err(|e| io("volume.raw", e))?;
        let mut meta = serde_json::json!({
            "shape": shape,
            "spacing_mm": volume.geometry.spacing_kji(),
            "affine_kji": volume.geometry.affine(),
            "series_instance_uid": volume.series.series_instance_uid,
            "sop_instance_uids": volume.slices.iter().map(|s| s.sop_instance_uid.clone()).collect::<Vec<_>>(),
        });
        if volume.slices.iter().any(|s| s.frame_number.is_some()) {
            meta["frame_numbers"] = serde_json::json!(volume
                .slices
                .iter()
                .map(|s| s.frame_number)
                .collect::<Vec<_>>());
        }
        std::fs::write(
            input.join("volume.json"),
            serde_json::to_vec_pretty(&meta).unwrap_or_default(),
        )
        .map_err(|e| io("volume.json", e))?;
        let dicom = input.join("dicom");
        std::fs::create_dir_all(&dicom).map_err(|e| io("dicom/", e))?;
        let mut linked = HashSet::new();
        for (k, s) in volume.slices.iter().enumerate() {
            if !linked.insert(&s.path) {
                continue; // the frames of one multi-frame file
            }
            let link = dicom.join(format!("{k:05}.dcm"));
            if std::os::unix::fs::symlink(&s.path, &link).is_err() {
                std::fs::copy(&s.path, &link).map_err(|e| io("dicom/", e))?;
            }
        }
        Ok(())
    }

    fn run_command(&self, dir: &Path, input: &Path, output: &Path) -> Result<(), SegmentError> {
        use std::os::unix::process::CommandExt;
        let subst = |a: &String| {
            a.replace("{input}", &input.display().to_string())
                .replace("{output}", &output.display().to_string())
        };
        let log = std::fs::File::create(dir.join("model.log"))
            .map_err(|e| failed(format!("model log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| failed(format!("model log: {e}")))?;
        let mut child = Command::new(subst(&self.command[0]))
            .args(self.command[1..].iter().map(subst))
            .current_dir(dir)
            .env("SEGNODE_INPUT", input)
            .env("SEGNODE_OUTPUT", output)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("cannot start the model `{}`: {e}", self.command[0])))?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let tail = log_tail(&dir.join("model.log"));
                    return Err(failed(format!("model exited with {status}{tail}")));
                }
                Ok(None) if start.elapsed() > self.timeout => {
                    // the whole process group: a model's own children must not outlive it
                    // SAFETY: kill(2) on the group we created for the child.
                    unsafe {
                        libc::kill(-(child.id() as i32), libc::SIGKILL);
                    }
                    let _ = child.wait();
                    return Err(failed(format!(
                        "model timed out after {:.0} s and was killed",
                        self.timeout.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(failed(format!("waiting for the model: {e}"))),
            }
        }
    }

    fn read_outputs(&self, volume: &Volume, output: &Path) -> Result<Segmentation, SegmentError> {
        let shape = volume.shape();
        let n = shape[0] * shape[1] * shape[2];
        let labels_path = output.join("labels.raw");
        let bytes = std::fs::read(&labels_path)
            .map_err(|e| failed(format!("model wrote no output/labels.raw: {e}")))?;
        if bytes.len() != n {
            return Err(failed(format!(
                "output/labels.raw has {} bytes; the volume {:?} needs {n} (uint8, [slice][row][column])",
                bytes.len(),
                shape
            )));
        }
        let text = std::fs::read_to_string(output.join("segments.json"))
            .map_err(|e| failed(format!("model wrote no output/segments.json: {e}")))?;
        let model: ModelOutput = serde_json::from_str(&text)
            .map_err(|e| failed(format!("output/segments.json is not valid: {e}")))?;
        let mut present = [0usize; 256];
        for b in &bytes {
            present[*b as usize] += 1;
        }
        for (label, count) in present.iter().enumerate().skip(1) {
            if *count > 0 && !model.segments.iter().any(|s| s.label as usize == label) {
                return Err(failed(format!(
                    "label {label} ({count} voxels) is not described in segments.json"
                )));
            }
        }
        // renumber the described, non-empty labels to 1..N (the SEG writer's numbering)
        let mut map = [0u8; 256];
        let mut segments = Vec::new();
        let mut notes = Vec::new();
        let mut described: Vec<&ModelSegment> =
            model.segments.iter().filter(|s| s.label > 0).collect();
        described.sort_by_key(|s| s.label);
        for s in described {
            if present[s.label as usize] == 0 {
                notes.push(format!("segment `{}` (label {}) is empty", s.name, s.label));
                continue;
            }
            let number = segments.len() as u8 + 1;
            map[s.label as usize] = number;
            segments.push(Segment {
                number,
                description: SegmentDescription {
                    label: s.name.chars().take(64).collect(),
                    category: concept(&s.category),
                    property_type: concept(&s.property_type),
                    modifier: s.modifier.as_ref().map(concept),
                    algorithm_name: if model.algorithm.name.is_empty() {
                        self.name.to_string()
                    } else {
                        model.algorithm.name.clone()
                    },
                    algorithm_version: if model.algorithm.version.is_empty() {
                        "unknown".into()
                    } else {
                        model.algorithm.version.clone()
                    },
                    algorithm_family: ARTIFICIAL_INTELLIGENCE,
                    cielab: None,
                },
                measurements: vec![segnode_imaging::segment::Measurement {
                    name: "volume",
                    value: present[s.label as usize] as f64 * volume.geometry.voxel_volume_mm3()
                        / 1000.0,
                    unit: "mL",
                }],
                points: Vec::new(),
            });
        }
        let labels = ndarray::Array3::from_shape_vec(
            (shape[0], shape[1], shape[2]),
            bytes.iter().map(|b| map[*b as usize]).collect(),
        )
        .map_err(|e| failed(format!("labels: {e}")))?;
        if segments.is_empty() {
            notes.push(format!("no {} found", self.name));
        }
        Ok(Segmentation {
            labels,
            segments,
            notes,
            details: None,
        })
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    if tail.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
    }
}

impl Segmenter for ExternalSegmenter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> &'static str {
        "external"
    }

    fn segment(&self, volume: &Volume) -> Result<Segmentation, SegmentError> {
        let dir = self.work_root.join(format!(
            "{}-{:016x}",
            self.name.replace(':', "-"),
            rand::random::<u64>()
        ));
        let (input, output) = (dir.join("input"), dir.join("output"));
        for d in [&input, &output] {
            std::fs::create_dir_all(d)
                .map_err(|e| failed(format!("work folder {}: {e}", d.display())))?;
        }
        let result = self
            .write_inputs(volume, &input)
            .and_then(|_| self.run_command(&dir, &input, &output))
            .and_then(|_| self.read_outputs(volume, &output));
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}
