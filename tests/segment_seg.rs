//! The DICOM SEG writer on a real series: dciodvfy clean, highdicom reads it back bit-exact.

mod support;

use segnode_imaging::result::{ResultOptions, SegError, SegObject};
use segnode_imaging::segment::codes::{
    ANATOMICAL_STRUCTURE, LEFT, LUNG, MORPHOLOGICAL_OPERATIONS, RIGHT,
};
use segnode_imaging::segment::{Segment, SegmentDescription, Segmentation};
use segnode_imaging::volume::{load_series, LoadOptions};

fn desc(label: &str, side: &segnode_imaging::segment::codes::CodedConcept) -> SegmentDescription {
    SegmentDescription {
        label: label.into(),
        category: ANATOMICAL_STRUCTURE,
        property_type: LUNG,
        modifier: Some(side.clone()),
        algorithm_name: "test".into(),
        algorithm_version: "1".into(),
        algorithm_family: MORPHOLOGICAL_OPERATIONS,
        cielab: Some([40000, 50000, 30000]),
    }
}

/// A label map that is not a lung segmentation but has the shapes that matter to the writer: two segments,
/// some slices with only one of them, some with none, odd frame sizes (122 x 102 pixels: frames do not end
/// on byte boundaries).
fn two_segments(v: &segnode_imaging::volume::Volume) -> Segmentation {
    let mut labels = ndarray::Array3::<u8>::zeros(v.hu.raw_dim());
    let [nk, _, ni] = v.shape();
    for ((k, _j, i), l) in labels.indexed_iter_mut() {
        let h = v.hu[[k, _j, i]];
        if h < -500 && k > 5 && k < nk - 3 {
            *l = if i < ni / 2 {
                1
            } else if k % 7 != 0 {
                2
            } else {
                0
            };
        }
    }
    let seg = |n: u8, label: &str, side| Segment {
        number: n,
        description: desc(label, side),
        measurements: vec![],
        points: vec![],
    };
    Segmentation {
        labels,
        segments: vec![seg(1, "Right lung", &RIGHT), seg(2, "Left lung", &LEFT)],
        notes: vec![],
        details: None,
    }
}

#[test]
fn seg_of_the_chest_crop_passes_dciodvfy_and_reads_back_bit_exact() {
    let src = support::shared_data("chest-ct-crop");
    let v = load_series(&src, &LoadOptions::default()).unwrap();
    let seg = two_segments(&v);
    let obj = SegObject::build(&v, &seg, &ResultOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.dcm");
    obj.write(&path).unwrap();
    if let Ok(p) = std::env::var("SEGNODE_KEEP_SEG") {
        std::fs::copy(&path, p).unwrap();
    }

    let errors = support::dciodvfy_errors(&path);
    assert!(
        errors.is_empty(),
        "dciodvfy errors:\n{}",
        support::dciodvfy_output(&path)
    );

    let report = support::check_seg_with_highdicom(&path, &src, &seg.labels);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["frames"].as_u64().unwrap() as usize,
        obj.frames.len()
    );
    let segs = report["segments"].as_array().unwrap();
    assert_eq!(segs[0]["type"], "39607008");
    assert_eq!(segs[0]["scheme"], "SCT");
    assert_eq!(segs[0]["modifier"], "24028007");
    assert_eq!(segs[1]["modifier"], "7771000");
    assert_eq!(segs[1]["algorithm_type"], "AUTOMATIC");
}

#[test]
fn empty_or_inconsistent_segmentations_are_refused_up_front() {
    let v = load_series(
        &support::shared_data("chest-ct-crop"),
        &LoadOptions::default(),
    )
    .unwrap();
    let empty = Segmentation {
        labels: ndarray::Array3::zeros(v.hu.raw_dim()),
        segments: vec![],
        notes: vec![],
        details: None,
    };
    assert!(matches!(
        SegObject::build(&v, &empty, &ResultOptions::default()),
        Err(SegError::Empty)
    ));

    let mut seg = two_segments(&v);
    seg.labels.fill(0);
    seg.labels[[10, 10, 10]] = 1;
    assert!(matches!(
        SegObject::build(&v, &seg, &ResultOptions::default()),
        Err(SegError::EmptySegment(2))
    ));

    let mut seg = two_segments(&v);
    seg.segments.swap(0, 1);
    assert!(matches!(
        SegObject::build(&v, &seg, &ResultOptions::default()),
        Err(SegError::SegmentNumbers(_))
    ));
}
