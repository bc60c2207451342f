//! `segnode phantom --kind cbct [--multiframe xray3d|enhanced-ct]`: write a temporal-bone CBCT phantom
//! series (a file per slice, or one multi-frame object), optionally its ground truth
//! (raw uint8 `[k, j, i]`, [`crate::cbct::cbct_class`] values) and the placed contacts as JSON.

use crate::cbct::{generate_cbct, CbctSpec};
use crate::cbct_write::{write_cbct_multiframe, write_cbct_series};
use crate::cli::PhantomArgs;
use anyhow::Context;

pub fn run(args: &PhantomArgs) -> anyhow::Result<serde_json::Value> {
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
    if let Some(t) = &args.truth {
        std::fs::write(t, ph.truth.as_slice().context("truth layout")?)
            .context("writing the truth")?;
    }
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
