//! Volume loading on the shared real CT data: geometry, HU, JPEG 2000 decoding, refusals.

mod support;

use segnode_imaging::volume::{load_series, LoadOptions, VolumeError};

#[test]
fn chest_crop_loads_sorted_along_the_normal_in_hu() {
    let v = load_series(
        &support::shared_data("chest-ct-crop"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(v.shape(), [112, 102, 122]);
    assert!(v.dropped.is_empty(), "{:?}", v.dropped);
    // sorted by position along the normal, spacing 1.5 mm
    let n = v.geometry.normal;
    let d: Vec<f64> = v
        .slices
        .iter()
        .map(|s| s.position[0] * n[0] + s.position[1] * n[1] + s.position[2] * n[2])
        .collect();
    assert!(
        d.windows(2).all(|w| (w[1] - w[0] - 1.5).abs() < 1e-3),
        "{d:?}"
    );
    assert!((v.geometry.slice_spacing - 1.5).abs() < 1e-6);
    // HU: air in the lungs and soft tissue / contrast both present
    let min = *v.hu.iter().min().unwrap();
    let max = *v.hu.iter().max().unwrap();
    assert!(min <= -900 && max >= 200, "HU range {min}..{max}");
    // the affine reproduces every slice's ImagePositionPatient
    for (k, s) in v.slices.iter().enumerate() {
        let p = v.geometry.index_to_patient(k as f64, 0.0, 0.0);
        for a in 0..3 {
            assert!(
                (p[a] - s.position[a]).abs() < 1e-3,
                "slice {k}: {p:?} vs {:?}",
                s.position
            );
        }
    }
    assert!(
        !v.series.series_instance_uid.is_empty() && !v.series.frame_of_reference_uid.is_empty()
    );
}

#[test]
fn jpeg2000_pelvis_decodes_to_plausible_hu() {
    let v = load_series(
        &support::shared_data("ct-jpeg2000"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(v.shape(), [20, 512, 512]);
    // a pelvis: mostly air outside, soft tissue around 0..100 HU, bone above 300
    let soft = v.hu.iter().filter(|&&h| (0..=100).contains(&h)).count();
    let bone = v.hu.iter().filter(|&&h| h > 300).count();
    let air = v.hu.iter().filter(|&&h| h < -900).count();
    let total = v.hu.len();
    assert!(
        soft > total / 20 && bone > total / 200 && air > total / 10,
        "soft {soft} bone {bone} air {air}"
    );
}

#[test]
fn too_few_slices_is_refused_with_a_reason() {
    let err = load_series(
        &support::shared_data("ct-jpeg2000"),
        &LoadOptions { min_slices: 50 },
    )
    .unwrap_err();
    assert!(
        matches!(err, VolumeError::TooFewSlices { found: 20, min: 50 }),
        "{err}"
    );
    assert!(err.to_string().contains("at least 50"));
}

#[test]
fn a_folder_without_dicom_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "not dicom").unwrap();
    let err = load_series(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, VolumeError::NoSlices { .. }), "{err}");
}

/// Transcode every file of `src` into `dst` with a DCMTK tool (`tool args in out`).
fn transcode(src: &std::path::Path, dst: &std::path::Path, tool: &str, args: &[&str]) {
    std::fs::create_dir_all(dst).unwrap();
    for f in support::files_under(src) {
        let out = dst.join(f.file_name().unwrap());
        let o = support::run_with_timeout(
            std::process::Command::new(tool)
                .args(args)
                .arg(&f)
                .arg(&out),
            std::time::Duration::from_secs(60),
        );
        assert!(
            o.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn rle_jpeg_lossless_and_deflate_decode_to_the_same_hu_as_native() {
    let src = support::shared_data("chest-ct-crop");
    let native = load_series(&src, &LoadOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (name, tool, args, ts) in [
        ("rle", "dcmcrle", vec![], "1.2.840.10008.1.2.5"),
        (
            "jpeg-lossless",
            "dcmcjpeg",
            vec!["+e1"],
            "1.2.840.10008.1.2.4.70",
        ),
        ("deflate", "dcmconv", vec!["+td"], "1.2.840.10008.1.2.1.99"),
    ] {
        let dir = tmp.path().join(name);
        transcode(&src, &dir, tool, &args);
        // the files really carry the transfer syntax
        let first = support::files_under(&dir).into_iter().next().unwrap();
        let obj = dicom_object::open_file(&first).unwrap();
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            ts,
            "{name}"
        );
        let v = load_series(&dir, &LoadOptions::default()).unwrap();
        assert_eq!(v.shape(), native.shape(), "{name}");
        assert!(
            v.hu == native.hu,
            "{name}: decoded HU differ from the native series"
        );
        assert_eq!(v.geometry, native.geometry, "{name}");
    }
}

#[test]
fn a_missing_slice_is_refused_as_a_gap_and_an_extra_series_is_dropped() {
    let src = support::shared_data("chest-ct-crop");
    let tmp = tempfile::tempdir().unwrap();
    let files = support::files_under(&src);
    for f in &files {
        std::fs::copy(f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    // a slice from another series (the JPEG 2000 pelvis) in the folder is left out with a reason
    let stray = support::files_under(&support::shared_data("ct-jpeg2000"))
        .into_iter()
        .next()
        .unwrap();
    std::fs::copy(&stray, tmp.path().join("stray.dcm")).unwrap();
    let v = load_series(tmp.path(), &LoadOptions::default()).unwrap();
    assert_eq!(v.shape()[0], 112);
    assert_eq!(v.dropped.len(), 1);
    assert!(
        v.dropped[0].reason.contains("another series"),
        "{:?}",
        v.dropped
    );

    // remove a slice from the middle of the stack: a gap, not a silently stretched volume
    let v_sorted: Vec<_> = v.slices.iter().map(|s| s.path.clone()).collect();
    std::fs::remove_file(&v_sorted[50]).unwrap();
    let err = load_series(tmp.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, VolumeError::Gap { .. }), "{err}");
    assert!(err.to_string().contains("missing slices"), "{err}");
}

/// Slices read ahead while a series arrives ([`prepare_slice`]) give the same volume as reading the
/// files at load time; a slice whose file was replaced afterwards (new content renamed over it, as the
/// store does for an instance received again) is read again, never taken stale.
#[test]
fn slices_read_ahead_match_the_files_and_a_replaced_one_is_read_again() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use segnode_imaging::volume::{load_series_with, prepare_slice, PreparedSlice};
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    for f in support::files_under(&support::shared_data("chest-ct-crop")) {
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let files = support::files_under(dir.path());
    let ahead: HashMap<PathBuf, Arc<PreparedSlice>> = files
        .iter()
        .map(|f| {
            (
                f.clone(),
                Arc::new(prepare_slice(f).unwrap().expect("single-frame slice")),
            )
        })
        .collect();
    let (v, used) = load_series_with(dir.path(), &LoadOptions::default(), &ahead).unwrap();
    assert_eq!(used, files.len());
    let first = load_series(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(v.hu, first.hu, "read-ahead volume differs from the files");

    // replace one slice's content: every stored value + 100 (HU + 100 with slope 1)
    let victim = &files[files.len() / 2];
    let mut obj = dicom_object::open_file(victim).unwrap();
    let px = obj.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap();
    let bytes = px.to_bytes().unwrap().into_owned();
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]).wrapping_add(100))
        .collect();
    obj.put(DataElement::new(
        dicom_dictionary_std::tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(words.into()),
    ));
    let tmp = dir.path().join(".replacement");
    obj.write_to_file(&tmp).unwrap();
    std::fs::rename(&tmp, victim).unwrap();

    let (v, used) = load_series_with(dir.path(), &LoadOptions::default(), &ahead).unwrap();
    assert_eq!(
        used,
        files.len() - 1,
        "the replaced slice must be read again"
    );
    let fresh = load_series(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(v.hu, fresh.hu, "a stale slice reached the volume");
    let k = v
        .slices
        .iter()
        .position(|s| &s.path == victim)
        .expect("replaced slice in the stack");
    // the replaced plane carries the new content (+100), the others are unchanged
    let shift: Vec<i32> =
        v.hu.index_axis(ndarray::Axis(0), k)
            .iter()
            .zip(first.hu.index_axis(ndarray::Axis(0), k).iter())
            .map(|(a, b)| i32::from(*a) - i32::from(*b))
            .collect();
    let hundred = shift.iter().filter(|&&d| d == 100).count();
    assert!(
        hundred * 10 > shift.len() * 9,
        "{hundred} of {} pixels +100",
        shift.len()
    );
    for j in (0..v.shape()[0]).filter(|&j| j != k) {
        assert_eq!(
            v.hu.index_axis(ndarray::Axis(0), j),
            first.hu.index_axis(ndarray::Axis(0), j)
        );
    }
}
