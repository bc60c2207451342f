//! Writing a CBCT phantom as a folder of single-frame CT Image Storage files (the export most CBCT
//! devices offer), signed 16-bit, one file per slice in the phantom's orientation; or as one
//! multi-frame object (X-Ray 3D Craniofacial, Enhanced CT) with the same pixels and UIDs.

use crate::cbct::{CbctPhantom, Ears, Orientation};
use crate::multiframe::{Anatomy, MultiFrame};
use crate::rng::Rng;
use crate::slices::{PhantomWriteError, SeriesTags, SlicePixels, WrittenSeries};
use crate::write::write_slices;
use segnode_imaging::result::uid::now_da_tm;
use std::path::Path;

/// Write the phantom into `dir` (created if needed).
pub fn write_cbct_series(ph: &CbctPhantom, dir: &Path) -> Result<WrittenSeries, PhantomWriteError> {
    write_cbct(ph, dir, None)
}

/// Write the phantom into `dir` (created if needed) as one multi-frame object of the given IOD, frames
/// in slice order; study / series / frame of reference UIDs as [`write_cbct_series`] with the same seed.
pub fn write_cbct_multiframe(
    ph: &CbctPhantom,
    dir: &Path,
    kind: MultiFrame,
) -> Result<WrittenSeries, PhantomWriteError> {
    write_cbct(ph, dir, Some(kind))
}

fn write_cbct(
    ph: &CbctPhantom,
    dir: &Path,
    multiframe: Option<MultiFrame>,
) -> Result<WrittenSeries, PhantomWriteError> {
    std::fs::create_dir_all(dir).map_err(|source| PhantomWriteError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let spec = &ph.spec;
    let mut rng = Rng::new(spec.seed ^ 0xCBC7);
    let study = rng.uid();
    let series = rng.uid();
    let frame_of_ref = rng.uid();
    let n = ph.hu.shape()[0];
    let sop_uids: Vec<String> = (0..n).map(|_| rng.uid()).collect();
    let (date, time) = now_da_tm();
    let g = &ph.geometry;
    let iop = spec.orientation.iop();
    let image_type = match spec.orientation {
        Orientation::Axial => "ORIGINAL\\PRIMARY\\AXIAL",
        _ => "DERIVED\\SECONDARY\\REFORMATTED",
    };
    let [_, rows, cols] = spec.shape();
    let series_tags = SeriesTags {
        image_type,
        accession: "CB0001",
        series_description: format!("Phantom CBCT temporal bone {}", spec.variant.name()),
        patient_name: format!("PHANTOM^CBCT^{}", spec.variant.name().to_uppercase()),
        patient_id: format!("CB-{}", spec.seed),
        birth_date: "19700101",
        body_part: "EAR",
        slice_thickness: spec.slice_mm,
        kvp: "90",
        patient_position: "HFS",
        series_number: "3",
        iop,
        rows,
        columns: cols,
        pixel_spacing: g.pixel_spacing,
        study: &study,
        series: &series,
        frame_of_reference: &frame_of_ref,
        date: &date,
        time: &time,
    };
    let slice = |k: usize| {
        let plane = ph.hu.index_axis(ndarray::Axis(0), k);
        let mut bytes = Vec::with_capacity(plane.len() * 2);
        for &h in plane.iter() {
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        let pixels = SlicePixels {
            bits_stored: 16,
            signed: true,
            intercept: "0",
            padding: None,
            bytes,
        };
        (k + 1, g.index_to_patient(k as f64, 0.0, 0.0), pixels)
    };
    let object = multiframe.map(|kind| {
        let anatomy = Anatomy {
            region: segnode_imaging::segment::codes::CodedConcept::new(
                "25342003",
                "SCT",
                "Temporal bone",
            ),
            laterality: match spec.ears {
                Ears::Left => "L",
                Ears::Right => "R",
                Ears::Both => "B",
            },
        };
        (kind, anatomy)
    });
    write_slices(
        dir,
        "CB",
        n,
        &series_tags,
        &sop_uids,
        &mut rng,
        object,
        slice,
    )
}
