"""Check a DICOM SEG written by segnode against the label map it was written from.

usage: check_seg.py SEG SOURCE_DIR LABELS_RAW K J I

LABELS_RAW holds the expected label map as uint8, C order [k, j, i], with k the index of the source slice
sorted along the slice normal (computed here independently from the source headers). A multi-frame
source (Enhanced CT, X-Ray 3D Craniofacial) counts one slice per frame, positioned by its functional
groups; its SEG frames must then name the source frame (ReferencedFrameNumber). The script reads
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


def group_attr(ds, n, seq, attr):
    """attr of macro seq for frame n of a multi-frame data set: per-frame group first, then shared."""
    groups = []
    if "PerFrameFunctionalGroupsSequence" in ds:
        groups.append(ds.PerFrameFunctionalGroupsSequence[n])
    if "SharedFunctionalGroupsSequence" in ds:
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for g in groups:
        if seq in g and attr in g[seq][0]:
            return g[seq][0][attr].value
    return None


def source_slices(src_dir):
    """(dataset, SOP Instance UID, frame number or None, IPP, IOP) for every slice or frame."""
    out = []
    for p in sorted(Path(src_dir).rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        if "PerFrameFunctionalGroupsSequence" in ds:
            for n in range(int(ds.NumberOfFrames)):
                ipp = group_attr(ds, n, "PlanePositionSequence", "ImagePositionPatient")
                iop = group_attr(ds, n, "PlaneOrientationSequence", "ImageOrientationPatient")
                out.append((ds, ds.SOPInstanceUID, n + 1, ipp, iop))
        elif "ImagePositionPatient" in ds:
            out.append((ds, ds.SOPInstanceUID, None, ds.ImagePositionPatient, ds.ImageOrientationPatient))
    return out


def main():
    seg_path, src_dir, raw, k, j, i = sys.argv[1:7]
    shape = (int(k), int(j), int(i))
    expected = np.fromfile(raw, dtype=np.uint8).reshape(shape)
    problems = []

    # source slices (or frames) sorted along the normal
    slices = source_slices(src_dir)
    iop = np.array(slices[0][4], dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda s: float(np.dot(np.array(s[3], dtype=float), normal)))
    srcs = [s[0] for s in slices]
    keys = [(s[1], s[2]) for s in slices]
    uids = sorted({s[1] for s in slices})
    multiframe = any(s[2] is not None for s in slices)
    index_of = {key: n for n, key in enumerate(keys)}
    if len(keys) != shape[0]:
        problems.append(f"{len(keys)} source slices, label map has {shape[0]}")

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

    # highdicom read-back, per source instance (or source frame), per segment
    if multiframe:
        if len(uids) != 1:
            problems.append(f"{len(uids)} multi-frame source instances, the checker takes one")
        arr = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=uids[0],
            source_frame_numbers=[f for _, f in keys],
            segment_numbers=numbers,
            combine_segments=False,
            # frames without mask have no SEG frame to reference them; checked frame by frame below
            assert_missing_frames_are_empty=True,
        )  # (frames, rows, cols, segments)
    else:
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[u for u, _ in keys], segment_numbers=numbers,
            combine_segments=False,
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
    pos = {n: np.array(s[3], dtype=float) for n, s in enumerate(slices)}

    def ref_key(ref):
        frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
        return (ref.ReferencedSOPInstanceUID, frame)

    with_frame_number = 0
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = fg.DerivationImageSequence[0].SourceImageSequence[0]
        with_frame_number += int("ReferencedFrameNumber" in ref)
        kk = index_of.get(ref_key(ref))
        if kk is None:
            problems.append(f"frame {f}: references an unknown instance / frame {ref_key(ref)}")
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
             index_of.get(ref_key(fg.DerivationImageSequence[0].SourceImageSequence[0])))
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
                      "frames_with_referenced_frame_number": with_frame_number,
                      "segments": segs}))
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
