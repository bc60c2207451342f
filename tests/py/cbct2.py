"""A second, independent temporal-bone CBCT phantom generator for the `cochlear` pipeline (issue 11).

Written apart from the Rust generator (crates/segnode-phantom/src/cbct.rs) and on purpose with a different
image model, so that the pipeline is checked on data it was not tuned on:

* cochlea: a logarithmic spiral (radius 3.6-4.2 mm at the round window, shrinking by a random rate) that
  rises along a modiolar axis pointing anterolaterally and down, with random per-case tilt; either ear, the
  right one the mirror image of the left;
* electrode array: band contacts (short cylinders along the path, 0.4-0.6 mm across, 0.3-0.5 mm long) on
  a platinum lead wire (0.16-0.24 mm across) running from the tip through the round window out to the
  field's edge; lateral / mid-scala / perimodiolar position (radius offset from the canal centre line);
* partial volume by 4x4x4 supersampling of the metal occupancy in every voxel near the wire; the truth is
  the metal at its physical size (occupancy >= 0.5);
* a Gaussian point-spread function, beam-hardening streaks (dark bands through pairs of contacts and
  bright rays from the array, in the axial acquisition planes), correlated noise (white noise smoothed),
  grey values either HU or an uncalibrated linear map, metal either clipped at the device maximum or not;
* dense otic capsule so that the lead's partial-volume brightness overlaps bone and reaches the clip.

Usage: cbct2.py --seed N --out DIR [--case JSON]  (writes DIR/series/*.dcm, DIR/truth.npy, DIR/truth.json)
`sample_case(seed)` draws the sweep's case parameters; `generate(case)` returns (values, truth, info).
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

ORIENTATIONS = {
    "axial": ([1, 0, 0], [0, 1, 0]),
    "coronal": ([1, 0, 0], [0, 0, -1]),
    "sagittal": ([0, 1, 0], [0, 0, -1]),
}

# array families (contacts, pitch range mm) that real devices span, and the positions in the scala
FAMILIES = [(12, 1.9, 2.4), (16, 0.9, 1.1), (22, 0.7, 0.9), (20, 1.2, 1.5), (24, 0.6, 0.75), (14, 1.4, 1.9)]
POSITIONS = {"lateral": 0.35, "mid": 0.0, "perimodiolar": -0.45}


def rot(axis, ang):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(ang), math.sin(ang)
    C = 1 - c
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


def sample_case(seed):
    """The sweep's parameters for one seed (every band covered as the seed runs)."""
    r = np.random.default_rng(seed * 7919 + 11)
    fam = FAMILIES[seed % len(FAMILIES)]
    n_contacts = int(fam[0])
    pitch = float(r.uniform(fam[1], fam[2]))
    orient = ["axial", "coronal", "sagittal", "oblique"][(seed // 2) % 4]
    pos = ["lateral", "mid", "perimodiolar"][(seed // 3) % 3]
    voxel = [0.1, 0.15, 0.2, 0.25, 0.3, 0.4][(seed // 5) % 6]
    aniso = seed % 7 == 3
    slice_mm = min(0.4, voxel * 1.6) if aniso else voxel
    side = ["right", "left", "both"][seed % 3] if seed % 5 != 4 else ["right", "left"][seed % 2]
    angle = float(r.uniform(270, 720))
    calibrated = seed % 4 != 1
    clip = [3071.0, 4095.0, 32767.0][seed % 3]
    return dict(seed=seed, contacts=n_contacts, pitch_mm=pitch, orientation=orient, position=pos,
                pixel_mm=voxel, slice_mm=slice_mm, side=side, insertion_deg=angle, calibrated=calibrated,
                device_max=clip, contact_d_mm=float(r.uniform(0.4, 0.6)),
                contact_len_mm=float(r.uniform(0.3, 0.5)), wire_d_mm=float(r.uniform(0.16, 0.24)),
                psf_mm=float(r.uniform(0.08, 0.16)), noise_sd=float(r.uniform(25, 70)))


def cochlea(side, r):
    """Frame of one cochlea: centre, axis (base -> apex), in-plane u, v (left ear; right mirrored)."""
    c = np.array([31.0 + r.uniform(-2, 2), 6.0 + r.uniform(-2, 2), r.uniform(-2, 2)])
    w = np.array([0.55, 0.65, -0.35]) + r.uniform(-0.12, 0.12, 3)
    w /= np.linalg.norm(w)
    u = np.cross(w, [0, 0, 1.0])
    u /= np.linalg.norm(u)
    u = rot(w, r.uniform(0, 2 * math.pi)) @ u
    v = np.cross(w, u)
    if side == "right":
        m = np.array([-1.0, 1, 1])
        c, w, u, v = c * m, w * m, u * m, -(v * m)  # mirror: keep the frame's handedness mirrored too
    return c, w, u, v


def array_path(case, side, r):
    """Contact centres (tip first), the wire polyline (tip -> base -> out), the true angle."""
    c, w, u, v = cochlea(side, r)
    r0 = r.uniform(3.6, 4.2)
    b = math.log(r0 / r.uniform(1.0, 1.4)) / (2.5 * 2 * math.pi)
    rise = r.uniform(2.5, 3.5) / (2.5 * 2 * math.pi)
    off = POSITIONS[case["position"]]
    # dense samples of the path from the round window (t = 0) along the scala
    t = np.linspace(0, 2.6 * 2 * math.pi, 20000)
    rad = np.maximum(r0 * np.exp(-b * t) + off * np.exp(-0.3 * t), 0.5)
    pts = (c[None] + (rad * np.cos(t))[:, None] * u[None] + (rad * np.sin(t))[:, None] * v[None]
           + (rise * t)[:, None] * w[None])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    # the tip at the requested insertion angle; contacts back from the tip at the pitch
    t_tip = math.radians(case["insertion_deg"])
    s_tip = float(np.interp(t_tip, t, s))
    n = case["contacts"]
    s_c = s_tip - np.arange(n) * case["pitch_mm"]
    if s_c[-1] < 0.3:  # the design does not fit at that depth: shorten from the base
        s_c = s_c[s_c >= 0.3]
    cpos = np.stack([np.interp(s_c, s, pts[:, a]) for a in range(3)], 1)
    t_c = np.interp(s_c, s, t)
    angle = math.degrees(t_c[0] - t_c[-1])
    # the wire: tip -> round window along the path, then out through the middle ear (lateral, up, back)
    keep = s <= s_tip
    intra = pts[keep][::-1]
    lat = np.sign(c[0])
    rw = pts[0]
    tangent0 = -(pts[5] - pts[0]) / np.linalg.norm(pts[5] - pts[0])
    ext = [rw + tangent0 * 1.5, rw + tangent0 * 3 + np.array([lat * 2, 1.5, 1.0]),
           rw + np.array([lat * 9, 7, 3.0]), rw + np.array([lat * 22, 16, 6.0])]
    wire = np.concatenate([intra, np.array(ext)])
    return cpos, s_c, wire, angle, (c, w, u, v, r0, b, rise)


def generate(case):
    r = np.random.default_rng(case["seed"])
    sides = ["right", "left"] if case["side"] == "both" else [case["side"]]
    arrays = []
    for sd in sides:
        cpos, s_c, wire, angle, frame = array_path(case, sd, r)
        arrays.append(dict(side=sd, contacts=cpos, wire=wire, angle=angle, frame=frame))
    # grid: a box around the implanted cochleae (plus margin), in the requested orientation
    if case["orientation"] == "oblique":
        R = rot([1, 0, 0], math.radians(r.uniform(15, 35))) @ rot([0, 0, 1], math.radians(r.uniform(-30, 30)))
        row, col = R[:, 0], R[:, 1]
    else:
        row, col = map(lambda a: np.array(a, float), ORIENTATIONS[case["orientation"]])
    normal = np.cross(row, col)
    axes = np.stack([row, col, normal])  # index axes i, j, k in patient space
    # the field: each implanted cochlea +- 9 mm in the grid's own axes (the lead leaves the field)
    cproj = np.array([a["frame"][0] for a in arrays]) @ axes.T
    lo = cproj.min(0) - 9.0 + r.uniform(-1.5, 1.5, 3)
    hi = cproj.max(0) + 9.0 + r.uniform(-1.5, 1.5, 3)
    sp = np.array([case["pixel_mm"], case["pixel_mm"], case["slice_mm"]])
    n = np.ceil((hi - lo) / sp).astype(int) + 1
    # cap the matrix (both ears at 0.1 mm would be huge): coarsen the grid and say so
    while np.prod(n) > 12e6:
        sp = sp * 1.15
        n = np.ceil((hi - lo) / sp).astype(int) + 1
    origin = lo @ axes  # patient position of voxel (0,0,0)
    nk, nj, ni = n[2], n[1], n[0]
    # patient positions of voxel centres, shape (k, j, i, 3)
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    P = (origin[None, None, None] + ii[..., None] * sp[0] * row + jj[..., None] * sp[1] * col
         + kk[..., None] * sp[2] * normal).astype(np.float32)
    hu = anatomy(P, arrays, r).astype(np.float32)
    del kk, jj, ii
    occ = np.zeros((nk, nj, ni), np.float32)
    cocc = np.zeros((nk, nj, ni), np.float32)
    occs = []
    for a in arrays:
        o, co = occupancy(a, case, origin, axes, sp, (nk, nj, ni))
        occs.append(o)
        occ = np.maximum(occ, o)
        cocc = np.maximum(cocc, co)
    truth = np.zeros((nk, nj, ni), np.uint8)
    for a, o in zip(arrays, occs):
        truth[o >= 0.5] = 1 if a["side"] == "right" else 2
    # metal: platinum's effective value; blurred by the PSF (in voxels per axis)
    metal_hu = r.uniform(20000, 40000)
    img = hu * (1 - occ) + metal_hu * occ
    sig = [case["psf_mm"] / sp[2], case["psf_mm"] / sp[1], case["psf_mm"] / sp[0]]
    img = ndimage.gaussian_filter(img, sig, mode="nearest")
    # beam hardening in axial planes: dark bands through pairs of contacts, bright rays from the array
    img += streaks(P, arrays, r)
    del P
    # correlated noise
    noise = r.standard_normal(img.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, 0.8)
    noise *= case["noise_sd"] / max(noise.std(), 1e-6)
    img += noise
    # grey values: HU, or an uncalibrated linear map (CBCT devices differ)
    gain, bias = (1.0, 0.0) if case["calibrated"] else (float(r.uniform(0.8, 1.4)), float(r.uniform(0, 700)))
    img = img * gain + bias
    img = np.clip(img, -1024 * gain + bias, case["device_max"])
    vals = np.round(img).astype(np.int16)
    info = dict(case=case, origin=origin.tolist(), row=row.tolist(), col=col.tolist(), normal=normal.tolist(),
                spacing=sp.tolist(), shape=[int(nk), int(nj), int(ni)], gain=gain, bias=bias,
                metal_hu=metal_hu,
                arrays=[dict(side=a["side"], contacts=a["contacts"].tolist(), insertion_angle_deg=a["angle"],
                             metal_voxels=int((truth == (1 if a["side"] == "right" else 2)).sum()))
                        for a in arrays])
    return vals, truth, info


def anatomy(P, arrays, r):
    """Soft tissue, petrous bone (ellipsoid), dense otic capsule around each cochlea, fluid in the canal,
    air in the middle ear, in HU."""
    hu = np.full(P.shape[:3], 35.0, np.float32)
    bone_hu = r.uniform(1100, 1500)
    capsule_hu = r.uniform(1900, 2500)
    for side in ["right", "left"]:
        sx = 1 if side == "left" else -1
        c0 = np.array([31.0 * sx, 6.0, 0.0])
        d = (P - c0) / np.array([12.0, 16.0, 11.0])
        hu[(d ** 2).sum(-1) < 1] = bone_hu
        # middle ear air (lateral of the cochlea)
        e = (P - (c0 + np.array([7.0 * sx, 2.0, 2.0]))) / np.array([3.0, 5.0, 4.0])
        hu[(e ** 2).sum(-1) < 1] = -900
    for a in arrays:
        c, w, u, v, r0, b, rise = a["frame"]
        d = P - c
        z = d @ w
        x, y = d @ u, d @ v
        rr = np.hypot(x, y)
        cap = (rr < r0 + 2.2) & (z > -2.0) & (z < 5.5)
        hu[cap] = capsule_hu
        # canal: points near the spiral centre line (radius at the angle, unwrapped by height)
        th = np.mod(np.arctan2(y, x), 2 * math.pi)
        best = np.full(rr.shape, 99.0, np.float32)
        for turn in range(3):
            t = th + turn * 2 * math.pi
            rad = r0 * np.exp(-b * t)
            dz = z - rise * t
            dd = np.hypot(rr - rad, dz)
            best = np.minimum(best, np.where(t < 2.6 * 2 * math.pi, dd, 99.0))
        hu[cap & (best < 0.75)] = 10.0
    return hu


def occupancy(a, case, origin, axes, sp, shape):
    """Metal occupancy (0-1) of every voxel by 4x4x4 supersampling, near the wire only; and the contacts'
    share alone."""
    wire = a["wire"]
    # dense samples along the wire with their radius (contacts wider over their length)
    seg = np.linalg.norm(np.diff(wire, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    ds = 0.01
    ss = np.arange(0, s[-1], ds)
    line = np.stack([np.interp(ss, s, wire[:, k]) for k in range(3)], 1)
    rad = np.full(len(ss), 0.5 * case["wire_d_mm"])
    is_c = np.zeros(len(ss), bool)
    tree_c = cKDTree(line)
    for p in a["contacts"]:
        i0 = int(np.argmin(np.linalg.norm(line - p, axis=1)))
        half = 0.5 * case["contact_len_mm"]
        m = np.abs(ss - ss[i0]) <= half
        rad[m] = 0.5 * case["contact_d_mm"]
        is_c[m] = True
    rmax = rad.max()
    # candidate voxels: the voxels of the line's samples, dilated by the largest radius and a voxel
    occ = np.zeros(shape, np.float32)
    cocc = np.zeros(shape, np.float32)
    inv = np.linalg.inv(np.stack([axes[0] * sp[0], axes[1] * sp[1], axes[2] * sp[2]]).T)
    idx = np.round((line - origin) @ inv.T).astype(int)  # (i, j, k)
    ok = np.all((idx >= 0) & (idx < np.array(shape)[::-1]), axis=1)
    mark = np.zeros(shape, bool)
    mark[idx[ok, 2], idx[ok, 1], idx[ok, 0]] = True
    reach = np.ceil((rmax + 0.5 * np.sqrt((sp ** 2).sum())) / sp).astype(int)
    st = np.ones((2 * reach[2] + 1, 2 * reach[1] + 1, 2 * reach[0] + 1), bool)
    mark = ndimage.binary_dilation(mark, st)
    cand = np.argwhere(mark)
    if len(cand) == 0:
        return occ, cocc
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    oz, oy, ox = np.meshgrid(sub, sub, sub, indexing="ij")
    offs = np.stack([ox.ravel(), oy.ravel(), oz.ravel()], 1)  # (i, j, k) fractions
    total = np.zeros(len(cand), np.float32)
    ctot = np.zeros(len(cand), np.float32)
    for off in offs:
        f = cand[:, ::-1] + off  # i, j, k
        p = origin + f[:, 0:1] * sp[0] * axes[0] + f[:, 1:2] * sp[1] * axes[1] + f[:, 2:3] * sp[2] * axes[2]
        d, nn = tree_c.query(p, distance_upper_bound=rmax + 0.05)
        ok = np.isfinite(d)
        inside = np.zeros(len(p), bool)
        inside[ok] = d[ok] <= rad[nn[ok]]
        total += inside
        ctot += inside & np.where(ok, is_c[np.minimum(nn, len(is_c) - 1)], False)
    occ[cand[:, 0], cand[:, 1], cand[:, 2]] = total / len(offs)
    cocc[cand[:, 0], cand[:, 1], cand[:, 2]] = ctot / len(offs)
    return occ, cocc


def streaks(P, arrays, r):
    """Beam-hardening streaks in axial planes (z constant): dark bands along lines through pairs of
    contacts and bright rays from the array centre, fading with distance."""
    out = np.zeros(P.shape[:3], np.float32)
    for a in arrays:
        cs = a["contacts"]
        cen = cs.mean(0)
        for _ in range(6):
            i, j = r.choice(len(cs), 2, replace=False)
            p, q = cs[i], cs[j]
            d = q[:2] - p[:2]
            if np.linalg.norm(d) < 0.5:
                continue
            d = d / np.linalg.norm(d)
            nrm = np.array([-d[1], d[0]])
            rel = P[..., :2] - p[:2]
            across = rel @ nrm
            along = rel @ d
            dz = np.abs(P[..., 2] - 0.5 * (p[2] + q[2]))
            out += (-r.uniform(150, 400) * np.exp(-0.5 * (across / 0.25) ** 2) * np.exp(-np.abs(along) / 12)
                    * (dz < 0.6))
        for _ in range(5):
            ang = r.uniform(0, 2 * math.pi)
            d = np.array([math.cos(ang), math.sin(ang)])
            nrm = np.array([-d[1], d[0]])
            rel = P[..., :2] - cen[:2]
            across = rel @ nrm
            along = rel @ d
            dz = np.abs(P[..., 2] - cen[2])
            out += (r.uniform(100, 300) * np.exp(-0.5 * (across / 0.3) ** 2) * np.exp(-np.abs(along) / 8)
                    * (along > 2) * np.exp(-0.5 * (dz / 2.5) ** 2))
    return out


def write_series(vals, info, folder, multiframe=False):
    """Single-frame CT Image Storage files, one per k slice (pydicom)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seed = info["case"]["seed"]
    study, series, frame = (generate_uid(entropy_srcs=[f"cbct2-{seed}-{x}"]) for x in "abc")
    row, col, normal = (np.array(info[x]) for x in ("row", "col", "normal"))
    origin = np.array(info["origin"])
    sp = info["spacing"]
    nk, nj, ni = vals.shape
    for k in range(nk):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        sop = generate_uid(entropy_srcs=[f"cbct2-{seed}-slice-{k}"])
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName = f"PHANTOM^CBCT2^{seed}"
        ds.PatientID = f"CB2-{seed}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = "CB2"
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "segnode cbct2 phantom"
        ds.BodyPartExamined = "EAR"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{x:.4f}" for x in origin + k * sp[2] * normal]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in np.concatenate([row, col])]
        ds.PixelSpacing = [f"{sp[1]:.4f}", f"{sp[0]:.4f}"]
        ds.SliceThickness = f"{sp[2]:.4f}"
        ds.KVP = "90"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = nj, ni
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = np.ascontiguousarray(vals[k]).tobytes()
        ds.save_as(folder / f"s{k:04d}.dcm", enforce_file_format=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", help="JSON overriding sample_case's parameters")
    a = ap.parse_args()
    case = sample_case(a.seed)
    if a.case:
        case.update(json.loads(a.case))
    vals, truth, info = generate(case)
    out = Path(a.out)
    write_series(vals, info, out / "series")
    np.save(out / "truth.npy", truth)
    (out / "truth.json").write_text(json.dumps(info))
    print(json.dumps({"shape": info["shape"], "arrays": len(info["arrays"])}))


if __name__ == "__main__":
    sys.exit(main())
