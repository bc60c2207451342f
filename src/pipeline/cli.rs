//! `segnode segment`: folder in, DICOM SEG out, one JSON line on stdout (series UID, slices, timings of
//! load / segment / write, per-lung measurements, notes). No lung found → no SEG, status "no lung found".

use anyhow::Context;
use segnode_imaging::result::{SegObject, SegOptions};
use segnode_imaging::segment::pipeline;
use segnode_imaging::volume::{load_series, LoadOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `segnode segment`.
#[derive(Debug, Clone, clap::Args)]
pub struct SegmentArgs {
    /// Segmentation pipeline.
    #[arg(long, default_value = "lung")]
    pub pipeline: String,
    /// Folder holding the CT series (one file per slice; sub-folders are read too).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the DICOM SEG.
    #[arg(long)]
    pub output: PathBuf,
    /// Fewer usable slices than this: the series is refused.
    #[arg(long, default_value_t = 10)]
    pub min_slices: usize,
    /// SeriesNumber of the SEG.
    #[arg(long, default_value_t = 9001)]
    pub series_number: i32,
    /// SeriesDescription of the SEG.
    /// SeriesDescription of the SEG (`{pipeline}` is replaced by the pipeline name).
    #[arg(long, default_value = "segnode {pipeline} segmentation")]
    pub series_description: String,
}

/// Run the pipeline and print the JSON summary; errors are returned (the caller prints them).
pub fn run(args: &SegmentArgs) -> anyhow::Result<serde_json::Value> {
    let segmenter = pipeline(&args.pipeline)?;
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
    let opts = SegOptions {
        series_number: args.series_number,
        series_description: args
            .series_description
            .replace("{pipeline}", &args.pipeline),
        ..SegOptions::default()
    };
    let obj = SegObject::build(&volume, &seg, &opts).context("building the DICOM SEG")?;
    obj.write(&args.output).context("writing the DICOM SEG")?;
    out["write_ms"] = json!((t2.elapsed().as_secs_f64() * 1e3).round());
    out["status"] = json!("ok");
    out["output"] = json!(args.output.display().to_string());
    out["seg_sop_instance_uid"] = json!(obj.sop_instance_uid);
    out["frames"] = json!(obj.frames.len());
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
