"""Check a DICOM SEG written by segnode against the label map it was written from.

usage: check_seg.py SEG SOURCE_DIR LABELS_RAW K J I

LABELS_RAW holds the expected label map as uint8, C order [k, j, i], with k the index of the source slice
sorted along the slice normal (computed here independently from the source headers). The script reads
the SEG with highdicom (hd.seg.segread) and checks, segment by segment and slice by slice, that the mask
read back equals the expected one bit for bit, and that each frame is mapped to the right source slice
(through its source image reference and its plane position). Prints one JSON line; exit 1 on mismatch.
"""
import json
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom


def main():
    seg_path, src_dir, raw, k, j, i = sys.argv[1:7]
    shape = (int(k), int(j), int(i))
    expected = np.fromfile(raw, dtype=np.uint8).reshape(shape)
    problems = []

    # source slices sorted along the normal
    srcs = []
    for p in sorted(Path(src_dir).rglob("*")):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:
                continue
            if "ImagePositionPatient" not in ds:
                continue
            srcs.append(ds)
    iop = np.array(srcs[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    srcs.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)))
    uids = [d.SOPInstanceUID for d in srcs]
    index_of = {u: n for n, u in enumerate(uids)}
    if len(uids) != shape[0]:
        problems.append(f"{len(uids)} source slices, label map has {shape[0]}")

    seg = hd.seg.segread(seg_path)
    numbers = [s.SegmentNumber for s in seg.SegmentSequence]
    if seg.SegmentationType != "BINARY":
        problems.append(f"SegmentationType {seg.SegmentationType}")
    if seg.StudyInstanceUID != srcs[0].StudyInstanceUID:
        problems.append("StudyInstanceUID differs from the source")
    if seg.FrameOfReferenceUID != srcs[0].FrameOfReferenceUID:
        problems.append("FrameOfReferenceUID differs from the source")
    if seg.SeriesInstanceUID == srcs[0].SeriesInstanceUID:
        problems.append("SEG reuses the source SeriesInstanceUID")
    refd = [r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence]
    if sorted(refd) != sorted(uids):
        problems.append("ReferencedSeriesSequence does not list every source instance")

    # highdicom read-back, per source instance, per segment
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=False
    )  # (slices, rows, cols, segments)
    for si, s in enumerate(numbers):
        got = arr[..., si].astype(bool)
        exp = expected == s
        if got.shape != exp.shape:
            problems.append(f"segment {s}: shape {got.shape} vs {exp.shape}")
            continue
        diff = int(np.count_nonzero(got != exp))
        if diff:
            problems.append(f"segment {s}: {diff} voxels differ after highdicom read-back")

    # frame by frame with pydicom: source reference and plane position map to the same slice
    ds = pydicom.dcmread(seg_path)
    px = ds.pixel_array
    if px.ndim == 2:
        px = px[None]
    pos = {n: np.array(d.ImagePositionPatient, dtype=float) for n, d in enumerate(srcs)}
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = fg.DerivationImageSequence[0].SourceImageSequence[0]
        kk = index_of.get(ref.ReferencedSOPInstanceUID)
        if kk is None:
            problems.append(f"frame {f}: references an unknown instance")
            continue
        if ref.SpatialLocationsPreserved != "YES":
            problems.append(f"frame {f}: SpatialLocationsPreserved {ref.SpatialLocationsPreserved}")
        ipp = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        if np.abs(ipp - pos[kk]).max() > 1e-3:
            problems.append(f"frame {f}: plane position {ipp} is not that of its source slice {pos[kk]}")
        s = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        if list(fg.FrameContentSequence[0].DimensionIndexValues)[0] != s:
            problems.append(f"frame {f}: first dimension index is not the segment number")
        if not np.array_equal(px[f].astype(bool), expected[kk] == s):
            problems.append(f"frame {f}: pixels differ from slice {kk} segment {s}")
    # every (segment, slice) with mask has a frame
    have = {(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber,
             index_of.get(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID))
            for fg in ds.PerFrameFunctionalGroupsSequence}
    for s in numbers:
        for kk in np.nonzero((expected == s).any(axis=(1, 2)))[0]:
            if (s, int(kk)) not in have:
                problems.append(f"segment {s} slice {kk}: mask but no frame")

    segs = []
    for d in seg.SegmentSequence:
        ty = d.SegmentedPropertyTypeCodeSequence[0]
        mod = getattr(ty, "SegmentedPropertyTypeModifierCodeSequence", None)
        segs.append({
            "number": d.SegmentNumber,
            "label": d.SegmentLabel,
            "category": d.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            "type": ty.CodeValue,
            "scheme": ty.CodingSchemeDesignator,
            "modifier": mod[0].CodeValue if mod else None,
            "algorithm_type": d.SegmentAlgorithmType,
        })
    print(json.dumps({"ok": not problems, "problems": problems[:20], "frames": int(ds.NumberOfFrames),
                      "segments": segs}))
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
