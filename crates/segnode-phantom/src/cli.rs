//! The `segnode-phantom` command line: write a chest CT or temporal-bone CBCT phantom series for tests,
//! benchmarks and peers, optionally with its ground truth as raw uint8 `[k, j, i]`.

use crate::cbct::{generate_cbct, CbctSpec};
use crate::cbct_write::{write_cbct_multiframe, write_cbct_series};
use crate::{generate, write_series, write_series_multiframe, Spec, Variant};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct PhantomArgs {
    /// Phantom kind: `chest` or `cbct` (temporal bone with cochlear implants).
    #[arg(long, default_value = "chest")]
    pub kind: String,
    #[arg(long, value_enum, default_value = "standard")]
    pub variant: Variant,
    /// Variant of the `cbct` kind.
    #[arg(long, value_enum, default_value = "coronal-right")]
    pub cbct_variant: crate::cbct::CbctVariant,
    /// `cbct` kind: a cube of N³ voxels around the variant's centre (benchmarks).
    #[arg(long)]
    pub cube: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Rows = columns.
    #[arg(long, default_value_t = 512)]
    pub matrix: usize,
    /// Number of slices (the covered range is centred on the variant's range).
    #[arg(long)]
    pub slices: Option<usize>,
    /// Slice spacing in mm (default: the variant's).
    #[arg(long)]
    pub slice_spacing: Option<f64>,
    /// Output folder of the series.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the ground truth label map (uint8, C order [slice, row, column]).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Write ONE multi-frame object instead of a file per slice: `xray3d` (X-Ray 3D Craniofacial) or
    /// `enhanced-ct` (Enhanced CT).
    #[arg(long, value_enum)]
    pub multiframe: Option<crate::MultiFrame>,
}

pub fn run(args: &PhantomArgs) -> anyhow::Result<serde_json::Value> {
    if args.kind == "cbct" {
        return run_cbct(args);
    }
    anyhow::ensure!(
        args.kind == "chest",
        "unknown phantom kind {:?} (known: chest, cbct)",
        args.kind
    );
    anyhow::ensure!(
        (16..=1024).contains(&args.matrix),
        "matrix must be 16..=1024"
    );
    let mut spec = Spec::new(args.variant, args.seed, args.matrix);
    if let Some(s) = args.slice_spacing {
        anyhow::ensure!(s > 0.05, "slice spacing must be > 0.05 mm");
        spec.slice_spacing = s;
    }
    if let Some(n) = args.slices {
        anyhow::ensure!((2..=4096).contains(&n), "slices must be 2..=4096");
        let centre = 0.5 * (spec.z_range[0] + spec.z_range[1]);
        let half = 0.5 * (n as f64 - 1.0) * spec.slice_spacing;
        spec.z_range = [centre - half, centre + half + 1e-6];
    }
    let ph = generate(&spec);
    let written = match args.multiframe {
        Some(kind) => write_series_multiframe(&ph, &args.out, kind),
        None => write_series(&ph, &args.out),
    }
    .context("writing the phantom series")?;
    write_truth(args, &ph.truth)?;
    let s = ph.hu.shape();
    Ok(serde_json::json!({
        "variant": args.variant.name(),
        "multiframe": args.multiframe.map(|m| m.name()),
        "seed": args.seed,
        "shape": [s[0], s[1], s[2]],
        "pixel_spacing": ph.geometry.pixel_spacing,
        "slice_spacing": ph.geometry.slice_spacing,
        "series_uid": written.series_instance_uid,
        "out": args.out.display().to_string(),
    }))
}

/// `--kind cbct [--multiframe xray3d|enhanced-ct]`: a temporal-bone CBCT phantom series (a file per
/// slice, or one multi-frame object), optionally its ground truth (raw uint8 `[k, j, i]`,
/// [`crate::cbct::cbct_class`] values) and the placed contacts as JSON.
fn run_cbct(args: &PhantomArgs) -> anyhow::Result<serde_json::Value> {
    let mut spec = CbctSpec::new(args.cbct_variant, args.seed);
    if let Some(n) = args.cube {
        anyhow::ensure!((16..=1024).contains(&n), "cube must be 16..=1024");
        spec = spec.with_cube(n);
    }
    let ph = generate_cbct(&spec);
    let written = match args.multiframe {
        Some(kind) => write_cbct_multiframe(&ph, &args.out, kind),
        None => write_cbct_series(&ph, &args.out),
    }
    .context("writing the phantom series")?;
    write_truth(args, &ph.truth)?;
    let s = ph.hu.shape();
    let arrays: Vec<serde_json::Value> = ph
        .arrays
        .iter()
        .map(|a| {
            serde_json::json!({
                "side": if a.side == 1 { "left" } else { "right" },
                "contacts": a.contacts,
                "insertion_angle_deg": a.insertion_angle_deg,
                "length_mm": a.length_mm,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "kind": "cbct",
        "variant": spec.variant.name(),
        "multiframe": args.multiframe.map(|m| m.name()),
        "seed": args.seed,
        "shape": [s[0], s[1], s[2]],
        "pixel_spacing": ph.geometry.pixel_spacing,
        "slice_spacing": ph.geometry.slice_spacing,
        "series_uid": written.series_instance_uid,
        "arrays": arrays,
        "out": args.out.display().to_string(),
    }))
}

/// The truth label map as raw uint8 `[k, j, i]`, when `--truth` asks for it.
fn write_truth(args: &PhantomArgs, truth: &ndarray::Array3<u8>) -> anyhow::Result<()> {
    if let Some(t) = &args.truth {
        std::fs::write(t, truth.as_slice().context("truth layout")?)
            .context("writing the truth")?;
    }
    Ok(())
}

/// The `segnode-phantom` command line; the binary and the tests (in-process) parse the same one.
#[derive(Debug, clap::Parser)]
#[command(
    name = "segnode-phantom",
    version,
    about = "Write a synthetic chest CT or temporal-bone CBCT series with its ground truth"
)]
pub struct PhantomCli {
    #[command(flatten)]
    pub args: PhantomArgs,
}

/// Parse `argv` (program name first) like the binary does, then [`run`].
pub fn run_from<I, T>(argv: I) -> anyhow::Result<serde_json::Value>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let cli = PhantomCli::try_parse_from(argv)?;
    run(&cli.args)
}
