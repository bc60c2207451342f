"""Check every result form segnode wrote for one series against its SEG and its source, independently.

usage: check_forms.py SOURCE_DIR SUMMARY_JSON WINDOW_CENTER WINDOW_WIDTH

SUMMARY_JSON is what `segnode segment --output-dir ... --forms ...` printed (its `outputs` name the files).
The SEG is read back (pydicom, bits unpacked here) as the reference mask; then:
- rtstruct: every CLOSED_PLANAR contour lies on the plane of the slice it references; the contours of a
  slice, filled with the even-odd rule at pixel centres (a scanline fill written here), give the SEG
  mask back (Dice per segment); POINT ROIs equal the reported contacts, in order.
- sc: one RGB 8-bit instance per source slice holding a segment, at that slice's position, referencing
  it; each pixel is the windowed CT (HU below -1024 as -1024; black outside the field of view: padding
  value or below -1100 HU), or an outline pixel on its segment's boundary, or lies in the legend box in
  the top-left corner; every boundary pixel outside that box is drawn.
- sr: highdicom's srread finds one volumetric measurement group per segment, referencing the SEG's
  segment, with the measurements of the summary; contact points as SCOORD3D.
Prints one JSON line; exit 1 when a problem is found.
"""
import json
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).parent))
from check_seg import source_slices  # noqa: E402

LEGEND_MARGIN, LEGEND_LINE = 4, 10


def geometry(ds):
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    sp = np.array(ds.PixelSpacing, dtype=float)  # row spacing, column spacing
    return ipp, row, col, np.cross(row, col), sp


def seg_masks(seg_path, index_of, shape):
    """{segment number: bool array [k, j, i]} and {number: label} from the SEG."""
    seg = pydicom.dcmread(seg_path)
    rows, cols = int(seg.Rows), int(seg.Columns)
    n = int(seg.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(seg.PixelData, dtype=np.uint8), bitorder="little")
    frames = bits[: n * rows * cols].reshape(n, rows, cols).astype(bool)
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    masks = {num: np.zeros(shape, dtype=bool) for num in labels}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        num = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        k = index_of[src.ReferencedSOPInstanceUID]
        masks[num][k] |= frames[f]
    return masks, labels, seg


def fill_even_odd(polys, rows, cols):
    out = np.zeros((rows, cols), dtype=bool)
    if not polys:
        return out
    a = np.concatenate([p for p in polys])
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polys])
    xs_all = np.arange(cols, dtype=float)
    for j in range(rows):
        y = float(j)
        cross = (a[:, 1] > y) != (b[:, 1] > y)
        if not cross.any():
            continue
        a1, b1 = a[cross], b[cross]
        x = a1[:, 0] + (y - a1[:, 1]) * (b1[:, 0] - a1[:, 0]) / (b1[:, 1] - a1[:, 1])
        x.sort()
        for x0, x1 in zip(x[0::2], x[1::2]):
            out[j] |= (xs_all > x0) & (xs_all < x1)
    return out


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / float(s)


def boundary(mask2d):
    p = np.pad(mask2d, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask2d & ~inner


def check_rtstruct(path, masks, labels, slices, index_of, contacts, problems):
    ds = pydicom.dcmread(path)
    shape = next(iter(masks.values())).shape
    rows, cols = shape[1], shape[2]
    roi_name = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    number_of = {label: num for num, label in labels.items()}
    filled = {num: [[] for _ in range(shape[0])] for num in labels}
    max_plane, points, longest = 0.0, [], 0
    for rc in ds.ROIContourSequence:
        name = roi_name[int(rc.ReferencedROINumber)]
        for c in getattr(rc, "ContourSequence", []):
            data = np.array(c.ContourData, dtype=float).reshape(-1, 3)
            longest = max(longest, len(data))
            for v in c.ContourData:
                if len(str(v)) > 16:
                    problems.append(f"rtstruct: DS value {v!r} longer than 16 characters")
            if c.ContourGeometricType == "POINT":
                points.append((name, data[0]))
                continue
            if c.ContourGeometricType != "CLOSED_PLANAR":
                problems.append(f"rtstruct: contour type {c.ContourGeometricType}")
                continue
            if name not in number_of:
                problems.append(f"rtstruct: ROI {name!r} is no SEG segment")
                continue
            k = index_of[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
            ipp, row, col, normal, sp = geometry(slices[k])
            rel = data - ipp
            max_plane = max(max_plane, float(np.abs(rel @ normal).max()))
            ij = np.stack([rel @ row / sp[1], rel @ col / sp[0]], axis=1)
            filled[number_of[name]][k].append(ij)
    dices = {}
    for num, label in labels.items():
        back = np.stack([fill_even_odd(p, rows, cols) for p in filled[num]])
        dices[label] = round(dice(back, masks[num]), 5)
        if dices[label] < 0.98:
            problems.append(f"rtstruct: {label} Dice {dices[label]} < 0.98")
    if max_plane > 0.01:
        problems.append(f"rtstruct: a point lies {max_plane:.4f} mm off its slice plane")
    want = [np.array(p, dtype=float) for arr in contacts for p in arr]
    got = [p for _, p in points]
    if len(got) != len(want):
        problems.append(f"rtstruct: {len(got)} POINT ROIs, {len(want)} reported contacts")
    else:
        for g, w in zip(got, want):
            if np.abs(g - w).max() > 0.002:
                problems.append(f"rtstruct: POINT {g} differs from contact {w}")
    interpreted = {str(o.RTROIInterpretedType) for o in ds.RTROIObservationsSequence}
    if points and "MARKER" not in interpreted:
        problems.append("rtstruct: contacts are not MARKER ROIs")
    return {
        "dice": dices,
        "max_plane_mm": round(max_plane, 5),
        "points": len(got),
        "longest_contour": longest,
    }


def check_sc(paths, masks, slices, index_of, center, width, n_segments, problems):
    shape = next(iter(masks.values())).shape
    any_mask = np.zeros(shape, dtype=bool)
    for m in masks.values():
        any_mask |= m
    expected_slices = {k for k in range(shape[0]) if any_mask[k].any()}
    seen, legend_h, legend_w, ct_px, outline_px = set(), 0, 0, 0, 0
    limit_h = 2 * LEGEND_MARGIN + (n_segments + 1) * LEGEND_LINE
    for p in paths:
        ds = pydicom.dcmread(p)
        if ds.SamplesPerPixel != 3 or ds.PhotometricInterpretation != "RGB" or ds.BitsAllocated != 8:
            problems.append(f"sc: {p} is not 8-bit RGB")
            continue
        if ds.BurnedInAnnotation != "YES":
            problems.append("sc: BurnedInAnnotation is not YES though a legend is drawn")
        uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        k = index_of[uid]
        seen.add(k)
        src = slices[k]
        if ds.FrameOfReferenceUID != src.FrameOfReferenceUID or ds.StudyInstanceUID != src.StudyInstanceUID:
            problems.append("sc: study / frame of reference differ from the source")
        if np.abs(np.array(ds.ImagePositionPatient, float) - np.array(src.ImagePositionPatient, float)).max() > 1e-3:
            problems.append(f"sc: instance for slice {k} is not at the slice's position")
        img = ds.pixel_array.astype(int)
        full = pydicom.dcmread(src.filename)
        stored = full.pixel_array.astype(float)
        hu = stored * float(getattr(src, "RescaleSlope", 1)) + float(getattr(src, "RescaleIntercept", 0))
        # outside the field of view: the Pixel Padding Value (range), or below -1100 HU -> black
        outside = hu < -1100
        if "PixelPaddingValue" in full:
            lo = float(full.PixelPaddingValue)
            hi = float(getattr(full, "PixelPaddingRangeLimit", lo))
            outside |= (stored >= min(lo, hi)) & (stored <= max(lo, hi))
        hu = np.maximum(hu, -1024)
        grey = np.clip(np.round(((hu - (center - 0.5)) / (width - 1) + 0.5) * 255), 0, 255)
        grey[outside] = 0
        is_ct = np.all(np.abs(img - grey[..., None]) <= 1, axis=2)
        outline = np.zeros(hu.shape, dtype=bool)
        for m in masks.values():
            outline |= boundary(m[k])
        coloured = ~np.all(img == img[..., :1], axis=2)  # not grey
        odd = ~is_ct & ~outline
        if odd.any():
            jj, ii = np.nonzero(odd)
            legend_h, legend_w = max(legend_h, int(jj.max()) + 1), max(legend_w, int(ii.max()) + 1)
        box = np.zeros(hu.shape, dtype=bool)
        box[:limit_h, :] = True
        missed = outline & ~coloured & ~box
        if missed.any():
            problems.append(f"sc: slice {k}: {int(missed.sum())} boundary pixels not drawn")
        wrong = coloured & ~outline & ~box
        if wrong.any():
            problems.append(f"sc: slice {k}: {int(wrong.sum())} coloured pixels off the mask boundary")
        ct_px += int(is_ct.sum())
        outline_px += int((outline & coloured).sum())
    if legend_h > limit_h:
        problems.append(f"sc: pixels differ from the windowed CT down to row {legend_h} (legend ≤ {limit_h})")
    if seen != expected_slices:
        problems.append(f"sc: {len(seen)} instances for {len(expected_slices)} slices with a segment")
    return {"instances": len(paths), "legend_rows": legend_h, "ct_pixels": ct_px, "outline_pixels": outline_px}


MEASURES = {  # summary key suffix -> SR concept code value
    "volume_ml": "118565006",
    "mean_density_hu": "112031",
    "laa950_pct": "LAA950",
    "contacts_count": "CONTACTS",
    "insertion_angle_deg": "INSANGLE",
    "array_length_mm": "410668003",
}


def check_sr(path, seg_uid, summary, problems):
    sr = hd.sr.srread(path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    by_label = {s["label"]: s for s in summary["segments"]}
    found = {}
    for g in groups:
        label = g.tracking_identifier
        seg = by_label.get(label)
        if seg is None:
            problems.append(f"sr: group {label!r} is no segment of the summary")
            continue
        ref = g.referenced_segment
        if ref is None or ref.referenced_sop_instance_uid != seg_uid:
            problems.append(f"sr: group {label!r} does not reference the SEG")
        elif ref.referenced_segment_numbers != [seg["number"]]:
            problems.append(f"sr: group {label!r} references segment {ref.referenced_segment_numbers}")
        values = {m.name.value: float(m.value) for m in g.get_measurements()}
        found[label] = values
        for key, code in MEASURES.items():
            if key in seg and abs(values.get(code, float("nan")) - seg[key]) > 0.006:
                problems.append(f"sr: {label} {key} {values.get(code)} != summary {seg[key]}")
    if len(found) != len(summary["segments"]):
        problems.append(f"sr: {len(found)} measurement groups for {len(summary['segments'])} segments")
    ds = pydicom.dcmread(path)
    points = []

    def walk(items):
        for it in items:
            if it.ValueType == "SCOORD3D":
                points.append([float(v) for v in it.GraphicData])
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    want = [p for a in (summary.get("details") or {}).get("arrays", []) for p in a["contacts_mm"]]
    if len(points) != len(want) or any(
        max(abs(a - b) for a, b in zip(p, w)) > 0.01 for p, w in zip(points, want)
    ):
        problems.append(f"sr: {len(points)} SCOORD3D points, {len(want)} reported contacts")
    return {"groups": found, "points": len(points)}


def main():
    src_dir, summary_path, center, width = sys.argv[1:5]
    center, width = float(center), float(width)
    summary = json.loads(Path(summary_path).read_text())
    problems = []
    raw = source_slices(src_dir)
    iop = np.array(raw[0][4], dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    raw.sort(key=lambda s: float(np.dot(np.array(s[3], dtype=float), normal)))
    slices = [s[0] for s in raw]
    index_of = {s[1]: n for n, s in enumerate(raw)}
    shape = (len(slices), int(slices[0].Rows), int(slices[0].Columns))
    by_form = {}
    for o in summary["outputs"]:
        by_form.setdefault(o["form"], []).append(o["path"])
    seg_path = by_form["seg"][0]
    masks, labels, seg = seg_masks(seg_path, index_of, shape)
    contacts = [a["contacts_mm"] for a in (summary.get("details") or {}).get("arrays", [])]
    report = {"forms": {f: len(p) for f, p in by_form.items()}}
    if "rtstruct" in by_form:
        report["rtstruct"] = check_rtstruct(
            by_form["rtstruct"][0], masks, labels, slices, index_of, contacts, problems
        )
    if "sc" in by_form:
        report["sc"] = check_sc(
            by_form["sc"], masks, slices, index_of, center, width, len(labels), problems
        )
    if "sr" in by_form:
        report["sr"] = check_sr(by_form["sr"][0], seg.SOPInstanceUID, summary, problems)
    report["problems"] = problems
    print(json.dumps(report))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
