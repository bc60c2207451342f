"""The scipy peer of segnode's cochlear pipeline (benchmark only): threshold-and-components, the way the
Python tutorials do it.

pydicom load (slices sorted along the normal, rescaled to HU), the same metal threshold rule as segnode
(a band below the clipped maximum, above the 99.5th percentile of bone), 26-connected labelling of the
whole volume (scipy.ndimage.label), specks below 2 voxels dropped, components linked into chains when
their centroids are within 3 mm, chains of at least 4 components kept, contacts = component centroids
(scipy.ndimage.center_of_mass), side from patient x. Merged contacts are not split (one centroid per
component), which is what this approach gives.

usage: cochlear_scipy.py SERIES_DIR [LABELS_OUT.npy]  -> one JSON line (load_ms, segment_ms, arrays)
"""
import json
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from benchlib import read_sorted


def load(folder):
    dss, row, col, normal = read_sorted(folder)
    hu = np.empty((len(dss), dss[0].Rows, dss[0].Columns), np.int16)
    for k, d in enumerate(dss):
        v = d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1)) + float(
            getattr(d, "RescaleIntercept", 0))
        hu[k] = np.clip(np.round(v), -1024, 32767).astype(np.int16)
    ps = [float(x) for x in dss[0].PixelSpacing]
    pos = np.array([np.array(d.ImagePositionPatient, float) for d in dss])
    dz = float(np.dot(pos[-1] - pos[0], normal) / (len(dss) - 1))
    # index (k, j, i) -> patient: origin + i*row*ps[1] + j*col*ps[0] + k*normal*dz
    affine = np.stack([normal * dz, col * ps[0], row * ps[1]], axis=1)
    return hu, affine, pos[0]


def segment(hu, affine, origin):
    d = int(hu.max())
    bone = hu[(hu >= 300) & (hu < d)]
    bone_ref = float(np.percentile(bone, 99.5)) if bone.size else 300.0
    t = d - min(max(0.1 * (d - bone_ref), 50.0), 300.0)
    mask = hu >= t
    lab, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(hu.shape, np.uint8), []
    idx = np.arange(1, n + 1)
    sizes = ndi.sum(mask, lab, idx)
    keep = idx[sizes >= 2]
    cents = np.array(ndi.center_of_mass(mask, lab, keep)).reshape(-1, 3)
    pts = cents @ affine.T + origin
    # link components into chains: centroids within 3 mm (union-find)
    parent = list(range(len(keep)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a in range(len(keep)):
        dd = np.linalg.norm(pts[a + 1:] - pts[a], axis=1)
        for b in np.nonzero(dd <= 3.0)[0]:
            ra, rb = find(a), find(a + 1 + b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups = {}
    for a in range(len(keep)):
        groups.setdefault(find(a), []).append(a)
    out = np.zeros(hu.shape, np.uint8)
    arrays = []
    for g in groups.values():
        if len(g) < 4:
            continue
        x = float(pts[g, 0].mean())
        code = 2 if x > 0 else 1
        out[np.isin(lab, keep[g])] = code
        arrays.append({"side": "left" if code == 2 else "right", "contacts": len(g),
                       "contacts_mm": pts[g].round(3).tolist()})
    return out, arrays


def main():
    t0 = time.perf_counter()
    hu, affine, origin = load(sys.argv[1])
    t1 = time.perf_counter()
    labels, arrays = segment(hu, affine, origin)
    t2 = time.perf_counter()
    if len(sys.argv) > 2:
        np.save(sys.argv[2], labels)
    print(json.dumps({"load_ms": round((t1 - t0) * 1e3), "segment_ms": round((t2 - t1) * 1e3),
                      "arrays": arrays}))


if __name__ == "__main__":
    main()
