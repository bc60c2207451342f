"""The scipy.ndimage peer of segnode's lung pipeline (benchmark only).

The same classical steps as src/segment/lung.rs, written the way the Python tutorials of this field do it
(pydicom + numpy + scipy.ndimage, whole-array operations, per-slice loops where scipy has no 2D-in-3D
operation): block-mean downsampling, 3D labelling of air and tissue, component evidence (core mean HU,
parenchyma share, body contact), airway growth from a medial trachea seed (binary_propagation, with a
volume cap instead of segnode's layer-by-layer leak stop), erosion split of joined lungs with nearest-seed
regrowth (distance transform), per-slice closing and size-limited hole filling, full-resolution
refinement and measurements.

usage: lung_scipy.py SERIES_DIR [LABELS_OUT.npy]   -> one JSON line (load_ms, segment_ms, peak_rss_mb, lungs)
"""
import json
import resource
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from benchlib import read_sorted

AIR_HU, GAS_MEAN, MIN_PAREN, MIN_CONTACT = -400, -960.0, 0.5, 0.6
MIN_COMP_ML, MIN_LUNG_ML, AIRWAY_HU, NODULE_MM, MAX_HOLE_MM2, LAA = 5.0, 15.0, -950, 6.0, 1000.0, -950
S6 = ndi.generate_binary_structure(3, 1)


def load(folder):
    dss, row, col, normal = read_sorted(folder)
    pos = np.array([np.array(d.ImagePositionPatient, float) for d in dss])
    hu = np.empty((len(dss), dss[0].Rows, dss[0].Columns), np.int16)
    oof = np.zeros(hu.shape, bool)
    for k, d in enumerate(dss):
        raw = d.pixel_array.astype(np.int32)
        v = raw * float(getattr(d, "RescaleSlope", 1)) + float(getattr(d, "RescaleIntercept", 0))
        o = v < -1100
        if "PixelPaddingValue" in d:
            o |= raw == int(d.PixelPaddingValue)
        oof[k] = o
        hu[k] = np.where(o, -1024, np.clip(np.round(v), -1024, 32767)).astype(np.int16)
    ps = [float(x) for x in dss[0].PixelSpacing]
    dz = float(np.dot(pos[-1] - pos[0], normal) / (len(dss) - 1))
    return hu, oof, (dz, ps[0], ps[1]), pos[0], row, col, normal


def block_mean(a, f):
    nk, nj, ni = a.shape
    ck, cj, ci = -(-nk // f[0]), -(-nj // f[1]), -(-ni // f[2])
    pad = np.pad(a.astype(np.float32), ((0, ck * f[0] - nk), (0, cj * f[1] - nj), (0, ci * f[2] - ni)), mode="edge")
    return pad.reshape(ck, f[0], cj, f[1], ci, f[2]).mean(axis=(1, 3, 5))


def fill_holes_2d(mask, max_area):
    out = mask.copy()
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        m = mask[k]
        holes = ndi.binary_fill_holes(m) & ~m
        if not holes.any():
            continue
        hl, n = ndi.label(holes)
        sizes = np.bincount(hl.ravel())
        small = np.nonzero(sizes <= max_area)[0]
        small = small[small > 0]
        out[k] |= np.isin(hl, small)
    return out


def segment(hu, oof, sp, origin, row, col, normal):
    f = [max(1, int(round(2.0 / s))) for s in sp]
    c = block_mean(hu, f)
    coof = block_mean(oof, f) > 0.5
    cvox_ml = np.prod([sp[a] * f[a] for a in range(3)]) / 1000.0
    air = (c < AIR_HU) & ~coof
    tissue = (c >= AIR_HU) & ~coof
    tl, nt = ndi.label(tissue, S6)
    if nt == 0:
        return None
    body = int(np.argmax(np.bincount(tl.ravel())[1:]) + 1)
    al, na = ndi.label(air, S6)
    n = na + 1
    size = np.bincount(al.ravel(), minlength=n)
    core = ndi.binary_erosion(air, S6, border_value=1)
    core_n = np.bincount(al[core], minlength=n)
    core_sum = np.bincount(al[core], weights=c[core], minlength=n)
    tot_sum = np.bincount(al.ravel(), weights=c.ravel(), minlength=n)
    paren = np.bincount(al.ravel(), weights=((c >= -950) & (c <= -600)).ravel(), minlength=n)
    bc = np.zeros(n)
    oc = np.zeros(n)
    for ax in range(3):
        for sh in (1, -1):
            nb = np.roll(tl, sh, axis=ax)
            sl = [slice(None)] * 3
            sl[ax] = slice(0, 1) if sh == 1 else slice(-1, None)
            nb[tuple(sl)] = 0  # no wrap-around
            sel = al > 0
            bc += np.bincount(al[sel], weights=(nb[sel] == body), minlength=n)
            oc += np.bincount(al[sel], weights=((nb[sel] != 0) & (nb[sel] != body)), minlength=n)
    mean = np.where(core_n >= 8, core_sum / np.maximum(core_n, 1), tot_sum / np.maximum(size, 1))
    ok = (size * cvox_ml >= MIN_COMP_ML) & (mean > GAS_MEAN) & (paren / np.maximum(size, 1) >= MIN_PAREN) \
        & (bc / np.maximum(bc + oc, 1) >= MIN_CONTACT)
    ok[0] = False
    lung = ok[al]
    if lung.sum() * cvox_ml < MIN_LUNG_ML:
        return None

    # patient x of a coarse index
    step = np.array([normal * sp[0] * f[0], col * sp[1] * f[1], row * sp[2] * f[2]])
    off = origin + normal * sp[0] * (f[0] - 1) / 2 + col * sp[1] * (f[1] - 1) / 2 + row * sp[2] * (f[2] - 1) / 2

    def px(k, j, i):
        return off[0] + k * step[0][0] + j * step[1][0] + i * step[2][0]

    # airway: medial, round, pure-gas section in the most superior slices; propagate through gas
    ks = np.nonzero(lung.any(axis=(1, 2)))[0]
    order = ks[::-1] if step[0][2] > 0 else ks
    window = max(3, int(np.ceil(100.0 / (sp[0] * f[0]))))
    area_px = sp[1] * f[1] * sp[2] * f[2]
    seed = None
    for k in order[:window]:
        bj, bi = np.nonzero(tl[k] == body)
        if len(bj) == 0:
            continue
        bx = px(k, bj, bi)
        mid, width = 0.5 * (bx.min() + bx.max()), bx.max() - bx.min()
        l2, n2 = ndi.label(lung[k])
        best = None
        for r, sl in enumerate(ndi.find_objects(l2), 1):
            m = l2[sl] == r
            cnt = m.sum()
            area = cnt * area_px
            gas = (c[k][sl][m] < AIRWAY_HU).mean()
            jj, ii = np.nonzero(m)
            x = px(k, jj.mean() + sl[0].start, ii.mean() + sl[1].start)
            fill = cnt / m.size
            if 50 <= area <= 900 and gas >= 0.5 and fill >= 0.4 and abs(x - mid) <= 0.2 * width:
                if best is None or gas > best[0]:
                    best = (gas, r)
        if best is not None:
            seed = np.zeros_like(lung)
            seed[k] = l2 == best[1]
            break
    exclude = np.zeros_like(lung)
    if seed is not None:
        gas = lung & (c < AIRWAY_HU)
        w = ndi.binary_propagation(seed & gas, S6, mask=gas)
        if w.sum() * cvox_ml < 300:
            exclude = ndi.binary_dilation(w, S6)
    lung2 = lung & ~exclude

    # left / right
    lab, nl = ndi.label(lung2, S6)
    if nl == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    keep = (sizes * cvox_ml >= 1.0) & (sizes >= 0.005 * sizes.max())
    idx = np.arange(1, nl + 1)
    cm = np.array(ndi.center_of_mass(lung2, lab, idx))
    cx = px(cm[:, 0], cm[:, 1], cm[:, 2])
    ordr = [i for i in np.argsort(-sizes) if keep[i]]
    sides = np.zeros(lung.shape, np.uint8)
    if len(ordr) >= 2 and sizes[ordr[1]] >= 0.1 * sizes[keep].sum() and abs(cx[ordr[0]] - cx[ordr[1]]) > 30:
        a, b = ordr[0], ordr[1]
        mid = 0.5 * (cx[a] + cx[b])
        left_a = cx[a] > cx[b]
        for i in ordr:
            on_a_side = (cx[i] > mid) == left_a
            code = (2 if left_a else 1) if on_a_side else (1 if left_a else 2)
            sides[lab == i + 1] = code
    else:
        mass = lab == ordr[0] + 1
        er = mass
        done = False
        for r in range(1, max(2, int(np.ceil(15.0 / (sp[2] * f[2])))) + 1):
            er = ndi.binary_erosion(er, S6, border_value=1)
            el, ne = ndi.label(er, S6)
            if ne < 2:
                continue
            es = np.bincount(el.ravel())[1:]
            eo = np.argsort(-es)
            if es[eo[1]] >= 0.1 * es.sum():
                ecm = np.array(ndi.center_of_mass(er, el, [eo[0] + 1, eo[1] + 1]))
                ex = px(ecm[:, 0], ecm[:, 1], ecm[:, 2])
                if abs(ex[0] - ex[1]) > 30:
                    seeds = np.zeros(lung.shape, np.uint8)
                    seeds[el == eo[0] + 1] = 2 if ex[0] > ex[1] else 1
                    seeds[el == eo[1] + 1] = 1 if ex[0] > ex[1] else 2
                    allowed = np.isin(lab, [i + 1 for i in ordr])
                    _, ind = ndi.distance_transform_edt(seeds == 0, return_indices=True)
                    near = seeds[ind[0], ind[1], ind[2]]
                    sides = np.where(allowed, near, 0).astype(np.uint8)
                    done = True
                    break
        if not done:
            bk, bj, bi = np.nonzero(tl == body)
            bodyx = px(bk, bj, bi).mean()
            sides[np.isin(lab, [i + 1 for i in ordr])] = 2 if cx[ordr[0]] > bodyx else 1

    # closing (2D, per slice) and hole filling, per side
    r = max(1, int(round(NODULE_MM / min(sp[1] * f[1], sp[2] * f[2]))))
    disk = np.zeros((1, 2 * r + 1, 2 * r + 1), bool)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk[0] = yy * yy + xx * xx <= r * r
    out = sides.copy()
    for code in (1, 2):
        m = sides == code
        if not m.any():
            continue
        cl = ndi.binary_closing(m, disk, border_value=0)
        out[cl & (out == 0) & ~exclude & ~coof & (tl == body)] = code
    max_hole_c = int(MAX_HOLE_MM2 / (sp[1] * f[1] * sp[2] * f[2]))
    for code in (1, 2):
        filled = fill_holes_2d(out == code, max_hole_c)
        out[filled & (out == 0) & ~exclude] = code

    # full resolution: coarse interior kept, border band re-thresholded, holes filled
    cand = out.copy()
    for code in (1, 2):
        d = ndi.binary_dilation(out == code, S6) & (cand == 0) & ~exclude
        cand[d] = code
    sure = np.zeros_like(out, bool)
    for code in (1, 2):
        sure |= ndi.binary_erosion(out == code, S6, border_value=1)
    nk, nj, ni = hu.shape
    kk = (np.arange(nk) // f[0])[:, None, None]
    jj = (np.arange(nj) // f[1])[None, :, None]
    ii = (np.arange(ni) // f[2])[None, None, :]
    cand_up = cand[kk, jj, ii]
    sure_up = sure[kk, jj, ii]
    excl_up = exclude[kk, jj, ii]
    labels = np.where((cand_up > 0) & ~excl_up & (sure_up | ((hu < AIR_HU) & ~oof)), cand_up, 0).astype(np.uint8)
    max_hole = int(MAX_HOLE_MM2 / (sp[1] * sp[2]))
    for code in (1, 2):
        filled = fill_holes_2d(labels == code, max_hole)
        labels[filled & (labels == 0) & ~excl_up] = code
    return labels


def main():
    t0 = time.perf_counter()
    hu, oof, sp, origin, row, col, normal = load(sys.argv[1])
    t1 = time.perf_counter()
    labels = segment(hu, oof, sp, origin, row, col, normal)
    lungs = []
    if labels is not None:
        vml = sp[0] * sp[1] * sp[2] / 1000.0
        for code, name in ((1, "Right lung"), (2, "Left lung")):
            m = labels == code
            if m.any():
                h = hu[m]
                lungs.append({"label": name, "volume_ml": round(float(m.sum() * vml), 2),
                              "mean_density_hu": round(float(h.mean()), 2), "laa950_pct": round(float((h < LAA).mean() * 100), 2)})
    t2 = time.perf_counter()
    if len(sys.argv) > 2:
        np.save(sys.argv[2], labels if labels is not None else np.zeros(hu.shape, np.uint8))
    print(json.dumps({"load_ms": round((t1 - t0) * 1e3), "segment_ms": round((t2 - t1) * 1e3),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "lungs": lungs}))


if __name__ == "__main__":
    main()
