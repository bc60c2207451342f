#!/usr/bin/env python3
"""Check segnode's in-process ONNX inference against onnxruntime, written from the README's conventions
with numpy / scipy / onnxruntime only (no segnode code):

    onnx_compare.py MANIFEST.toml SERIES_DIR DUMP_DIR SEG.dcm

1. the model-grid input: the series read with pydicom, each channel normalised as the manifest says,
   oriented (permute / flip) and resampled (trilinear, voxel centres 0 aligned) -> compared with segnode's
   `input.f32`;
2. sliding window + Gaussian blending with onnxruntime on segnode's input -> compared with segnode's
   `probabilities.f32`; argmax on the model grid compared;
3. segnode's probabilities brought back to every source voxel (trilinear) and decided -> compared with the
   labels of segnode's SEG.
Prints one JSON line; exit 1 when a tolerance is broken (input / probabilities 1e-4, labels identical
except where the two most probable classes are within 1e-5).
"""
import itertools
import json
import math
import os
import sys
import tomllib

import numpy as np
import onnxruntime as ort
import pydicom
from scipy.ndimage import map_coordinates

TOL = 1e-4
TIE = 1e-5


def load_series(d):
    dss = [pydicom.dcmread(os.path.join(d, f)) for f in sorted(os.listdir(d))]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    pos = [float(np.dot(normal, np.array(ds.ImagePositionPatient, float))) for ds in dss]
    st = (pos[-1] - pos[0]) / (len(pos) - 1)
    vol = np.stack([ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1))
                    + float(getattr(ds, "RescaleIntercept", 0)) for ds in dss])
    ps = [float(v) for v in dss[0].PixelSpacing]
    return vol, [normal, col, row], [st, ps[0], ps[1]], [ds.SOPInstanceUID for ds in dss]


def normalise(v, how):
    kind = how["kind"]
    over = how.get("over", "all")
    mask = {"all": np.ones_like(v, bool), "nonzero": v != 0, "body": v > -500}[over]
    if kind == "none":
        return v.copy()
    if kind == "window":
        lo, hi = how["low"], how["high"]
        return (np.clip(v, lo, hi) - lo) / (hi - lo)
    if kind == "zscore":
        s = v[mask]
        return (v - s.mean()) / max(s.std(), 1e-6)
    if kind == "percentile":
        s = v[mask]
        lo, hi = np.percentile(s, how["low"]), np.percentile(s, how["high"])
        s = np.clip(s, lo, hi)
        return (np.clip(v, lo, hi) - s.mean()) / max(s.std(), 1e-6)
    raise SystemExit(f"unknown normalisation {kind}")


def orientation(dirs, code):
    """perm[t] = source axis of tensor axis t (D, H, W); flip[t]."""
    if code.lower() == "native":
        return [0, 1, 2], [False] * 3
    letters = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
    want = [letters[c] for c in code.upper()][::-1]  # code is W, H, D
    best = max(itertools.permutations(range(3)),
               key=lambda p: sum(abs(dirs[p[t]][want[t][0]]) for t in range(3)))
    flip = [bool((dirs[best[t]][want[t][0]] >= 0) != (want[t][1] > 0)) for t in range(3)]
    return list(best), flip


def starts(n, p, overlap):
    if n <= p:
        return [0]
    step = max(p * (1 - overlap), 1.0)
    steps = math.ceil((n - p) / step) + 1
    span = (n - p) / (steps - 1)
    return [int(math.floor(i * span + 0.5)) for i in range(steps)]


def gaussian(p):
    axes = []
    for n in p:
        c, s = (n - 1) / 2, n / 8
        axes.append(np.exp(-((np.arange(n) - c) ** 2) / (2 * s * s)))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def activate(y, a):
    if a == "softmax":
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if a == "sigmoid":
        return 1 / (1 + np.exp(-y))
    return y


def sliding(sess, x, m):
    inp = m["input"]
    p = inp["patch"]
    overlap = inp.get("overlap", 0.5)
    batch = inp.get("batch", 1)
    act = m["output"].get("activation", "none")
    c, n = x.shape[0], x.shape[1:]
    pn = [max(a, b) for a, b in zip(n, p)]
    xp = np.empty((c, *pn), np.float32)
    for ch in range(c):
        xp[ch] = x[ch].min()
    xp[:, :n[0], :n[1], :n[2]] = x
    pos = list(itertools.product(*[starts(pn[t], p[t], overlap) for t in range(3)]))
    g = gaussian(p)
    name = sess.get_inputs()[0].name
    acc, wsum = None, np.zeros(pn)
    for b0 in range(0, len(pos), batch):
        chunk = pos[b0:b0 + batch]
        xb = np.zeros((batch, c, *p), np.float32)
        for b, (d, h, w) in enumerate(chunk):
            xb[b] = xp[:, d:d + p[0], h:h + p[1], w:w + p[2]]
        y = activate(sess.run(None, {name: xb})[0].astype(np.float64), act)
        if acc is None:
            acc = np.zeros((y.shape[1], *pn))
        for b, (d, h, w) in enumerate(chunk):
            acc[:, d:d + p[0], h:h + p[1], w:w + p[2]] += y[b] * g
            wsum[d:d + p[0], h:h + p[1], w:w + p[2]] += g
    return (acc / wsum)[:, :n[0], :n[1], :n[2]], len(pos)


def decide(p, m):
    out = m["output"]
    listed = {l["channel"]: l for l in out["labels"]}
    if out.get("mode", "argmax") == "argmax":
        c = np.argmax(p, axis=0)
        return np.where(np.isin(c, list(listed)), c + 1, 0)
    thr = out.get("threshold", 0.5)
    best = np.zeros(p.shape[1:], int)
    bestp = np.full(p.shape[1:], -1.0)
    for c in listed:
        on = (p[c] >= thr) & (p[c] > bestp)
        best[on], bestp[on] = c + 1, p[c][on]
    return best


def near_tie(p):
    s = np.sort(p, axis=0)
    return (s[-1] - s[-2]) < TIE


def seg_labels(seg_path, uids, shape, m):
    ds = pydicom.dcmread(seg_path)
    name_to_channel = {l["name"]: l["channel"] for l in m["output"]["labels"]}
    seg_channel = {s.SegmentNumber: name_to_channel[s.SegmentLabel] for s in ds.SegmentSequence}
    frames = ds.pixel_array.reshape(-1, shape[1], shape[2])
    index = {u: k for k, u in enumerate(uids)}
    out = np.zeros(shape, int)
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        src = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        num = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        out[index[src]][frames[f] > 0] = seg_channel[num] + 1
    return out


def main():
    manifest_path, series_dir, dump_dir, seg_path = sys.argv[1:5]
    with open(manifest_path, "rb") as f:
        m = tomllib.load(f)
    vol, dirs, spacing, uids = load_series(series_dir)
    perm, flip = orientation(dirs, m["input"].get("orientation", "native"))
    osp = [spacing[perm[t]] for t in range(3)]
    tsp = m["input"].get("spacing_mm", osp)
    mshape = [max(1, int(math.floor(vol.shape[perm[t]] * osp[t] / tsp[t] + 0.5))) for t in range(3)]
    grid = json.load(open(os.path.join(dump_dir, "grid.json")))
    report = {"perm": perm, "flip": flip, "model_shape": mshape, "segnode_model_shape": grid["model_shape"]}
    ok = mshape == grid["model_shape"] and perm == grid["perm"] and flip == grid["flip"]
    # 1. input
    seg_in = np.fromfile(os.path.join(dump_dir, "input.f32"), "<f4").reshape(grid["input_shape"])
    mine = []
    for ch in m["input"]["channels"]:
        v = normalise(vol, ch["normalise"])
        v = np.transpose(v, perm)
        for t in range(3):
            if flip[t]:
                v = np.flip(v, axis=t)
        coords = np.meshgrid(*[np.arange(mshape[t]) * tsp[t] / osp[t] for t in range(3)], indexing="ij")
        mine.append(map_coordinates(v, coords, order=1, mode="nearest"))
    mine = np.stack(mine)
    report["input_max_abs"] = float(np.abs(mine - seg_in).max())
    ok &= report["input_max_abs"] <= TOL
    # 2. probabilities on the model grid, onnxruntime on segnode's input
    model_file = os.path.join(os.path.dirname(manifest_path), m["model"]["file"])
    sess = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    probs, patches = sliding(sess, seg_in, m)
    seg_p = np.fromfile(os.path.join(dump_dir, "probabilities.f32"), "<f4").reshape(grid["probabilities_shape"])
    report["patches"] = patches
    report["prob_max_abs"] = float(np.abs(probs - seg_p).max())
    ok &= report["prob_max_abs"] <= TOL
    a, b = np.argmax(probs, 0), np.argmax(seg_p, 0)
    ties = near_tie(seg_p)
    report["model_grid_label_mismatch"] = int(((a != b) & ~ties).sum())
    report["model_grid_near_ties"] = int(ties.sum())
    ok &= report["model_grid_label_mismatch"] == 0
    # 3. back on the source grid (from segnode's probabilities), against the SEG
    inv = [perm.index(a) for a in range(3)]
    src_coords = []
    for a in range(3):
        t = inv[a]
        n = vol.shape[a]
        o = np.arange(n)[::-1] if flip[t] else np.arange(n)
        src_coords.append(o * osp[t] / tsp[t])
    mesh = np.meshgrid(*src_coords, indexing="ij")  # source [k, j, i] -> coordinates on tensor axes inv[a]
    coords = [None] * 3
    for a in range(3):
        coords[inv[a]] = mesh[a]
    back = np.stack([map_coordinates(seg_p[c].astype(np.float64), coords, order=1, mode="nearest")
                     for c in range(seg_p.shape[0])])
    want = decide(back, m)
    got = seg_labels(seg_path, uids, vol.shape, m) if os.path.exists(seg_path) else np.zeros_like(want)
    ties = near_tie(back)
    report["source_voxels_labelled"] = int((want > 0).sum())
    report["source_label_mismatch"] = int(((want != got) & ~ties).sum())
    report["source_near_ties"] = int(ties.sum())
    ok &= report["source_label_mismatch"] == 0 and report["source_voxels_labelled"] > 0
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
