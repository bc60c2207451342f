//! `segnode segment`: folder in, result objects out, one JSON line on stdout (series UID, slices, timings
//! of load / segment / write, measurements, notes, and `outputs`: form, path, SOP class and instance of
//! every object written). `--output FILE` writes the SEG alone; `--output-dir DIR --forms seg,sc,…`
//! writes each form into `DIR/<form>/`. Nothing found → no object, status e.g. "no lung found".

use anyhow::Context;
use segnode_imaging::result::{build_forms, ResultOptions, FORMS};
use segnode_imaging::segment::{pipeline, Segmenter};
use segnode_imaging::volume::{load_series, LoadOptions};
use segnode_onnx::{OnnxSegmenter, RunLimits};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `segnode segment`.
#[derive(Debug, Clone, clap::Args)]
pub struct SegmentArgs {
    /// Segmentation pipeline.
    #[arg(long, default_value = "lung")]
    pub pipeline: String,
    /// Run a site's ONNX model instead: its manifest (the pipeline is then `onnx:<file stem>`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// With --model: write the model-grid input, the blended probabilities and the grid mapping here
    /// (`input.f32`, `probabilities.f32`, `grid.json`), to compare with another runtime.
    #[arg(long, requires = "model")]
    pub dump_dir: Option<PathBuf>,
    /// With --model: fail once inference has run this long (s).
    #[arg(long, default_value_t = 600.0, requires = "model")]
    pub timeout_s: f64,
    /// With --model: refuse the volume when its arrays would need more than this (MiB).
    #[arg(long, default_value_t = 8192, requires = "model")]
    pub max_memory_mb: u64,
    /// Folder holding the CT series (one file per slice; sub-folders are read too).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the DICOM SEG (the SEG alone).
    #[arg(
        long,
        required_unless_present = "output_dir",
        conflicts_with = "output_dir"
    )]
    pub output: Option<PathBuf>,
    /// A folder to write every form of `--forms` into (`DIR/<form>/<SOP Instance UID>.dcm`).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// The result forms to write with --output-dir: seg, sc, rtstruct, sr (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "seg")]
    pub forms: Vec<String>,
    /// Fewer usable slices than this: the series is refused.
    #[arg(long, default_value_t = 10)]
    pub min_slices: usize,
    /// SeriesNumber of the SEG (the other forms follow it: sc +1, rtstruct +2, sr +3).
    #[arg(long, default_value_t = 9001)]
    pub series_number: i32,
    /// SeriesDescription of the SEG (`{pipeline}` is replaced by the pipeline name; the other forms
    /// say overlay / structures / report instead of segmentation).
    #[arg(long, default_value = "segnode {pipeline} segmentation")]
    pub series_description: String,
}

/// Run the pipeline and print the JSON summary; errors are returned (the caller prints them).
pub fn run(args: &SegmentArgs) -> anyhow::Result<serde_json::Value> {
    let forms: Vec<&str> = if args.output.is_some() {
        vec!["seg"]
    } else {
        args.forms.iter().map(String::as_str).collect()
    };
    if let Some(bad) = forms.iter().find(|f| !FORMS.contains(f)) {
        anyhow::bail!("unknown result form `{bad}` (known: {})", FORMS.join(", "));
    }
    let segmenter: Box<dyn Segmenter> = match &args.model {
        Some(manifest) => {
            let stem = manifest
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            Box::new(
                OnnxSegmenter::new(
                    &format!("onnx:{stem}"),
                    manifest,
                    RunLimits {
                        timeout: std::time::Duration::from_secs_f64(args.timeout_s),
                        max_memory_mb: args.max_memory_mb,
                    },
                )
                .with_dump(args.dump_dir.clone()),
            )
        }
        None => pipeline(&args.pipeline)?,
    };
    let pipeline_name = segmenter.name();
    let t0 = Instant::now();
    let volume = load_series(
        &args.input,
        &LoadOptions {
            min_slices: args.min_slices,
        },
    )
    .with_context(|| format!("loading the series in {}", args.input.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let seg = segmenter.segment(&volume).context("segmenting")?;
    let segment_ms = t1.elapsed().as_secs_f64() * 1e3;
    let shape = volume.shape();
    let segments: Vec<serde_json::Value> = seg
        .segments
        .iter()
        .map(|s| {
            let mut o = json!({ "number": s.number, "label": s.description.label });
            for m in &s.measurements {
                o[format!("{}_{}", m.name, unit_suffix(m.unit))] =
                    json!((m.value * 100.0).round() / 100.0);
            }
            o
        })
        .collect();
    let mut out = json!({
        "pipeline": segmenter.name(),
        "version": segmenter.version(),
        "series_uid": volume.series.series_instance_uid,
        "slices": shape[0],
        "rows": shape[1],
        "columns": shape[2],
        "dropped": volume.dropped.len(),
        "dropped_reasons": volume
            .dropped
            .iter()
            .take(5)
            .map(|d| format!("{}: {}", d.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), d.reason))
            .collect::<Vec<_>>(),
        "load_ms": load_ms.round(),
        "segment_ms": segment_ms.round(),
        "segments": segments,
        "notes": seg.notes,
    });
    if let Some(d) = &seg.details {
        out["details"] = d.clone();
    }
    if seg.is_empty() {
        out["status"] = json!(segmenter.nothing_found());
        out["output"] = serde_json::Value::Null;
        out["write_ms"] = json!(0);
        if let Some(mb) = peak_rss_mb() {
            out["peak_rss_mb"] = json!(mb.round());
        }
        return Ok(out);
    }
    let t2 = Instant::now();
    let window = segmenter.display_window();
    let built = build_forms(&forms, &volume, &seg, |form| {
        let (offset, word) = match form {
            "sc" => (1, "overlay"),
            "rtstruct" => (2, "structures"),
            "sr" => (3, "report"),
            _ => (0, "segmentation"),
        };
        ResultOptions {
            series_number: args.series_number + offset,
            series_description: args
                .series_description
                .replace("{pipeline}", pipeline_name)
                .replace("segmentation", word),
            window,
            ..ResultOptions::default()
        }
    })
    .context("building the result objects")?;
    let mut outputs = Vec::new();
    for (form, objects) in &built {
        for obj in objects {
            let path = match (&args.output, &args.output_dir) {
                (Some(file), _) => file.clone(),
                (None, Some(dir)) => dir.join(form).join(format!("{}.dcm", obj.sop_instance_uid)),
                (None, None) => anyhow::bail!("--output or --output-dir is required"),
            };
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let tmp = path.with_extension("dcm.part");
            obj.write(&tmp)
                .with_context(|| format!("writing the {form} object"))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            if *form == "seg" {
                out["output"] = json!(path.display().to_string());
                out["seg_sop_instance_uid"] = json!(obj.sop_instance_uid);
                out["frames"] = obj.summary["frames"].clone();
            }
            outputs.push(json!({
                "form": form,
                "path": path.display().to_string(),
                "sop_class_uid": obj.sop_class_uid,
                "sop_instance_uid": obj.sop_instance_uid,
                "series_instance_uid": obj.series_instance_uid,
            }));
        }
    }
    out["write_ms"] = json!((t2.elapsed().as_secs_f64() * 1e3).round());
    out["status"] = json!("ok");
    out["outputs"] = json!(outputs);
    if let Some(mb) = peak_rss_mb() {
        out["peak_rss_mb"] = json!(mb.round());
    }
    Ok(out)
}

/// Peak resident memory of this process (Linux VmHWM), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn unit_suffix(unit: &str) -> &str {
    match unit {
        "mL" => "ml",
        "HU" => "hu",
        "%" => "pct",
        other => other,
    }
}
