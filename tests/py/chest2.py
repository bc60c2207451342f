"""A second, independent chest CT phantom generator for the `lung` pipeline's disease handling (issue 19).

Written apart from the Rust generator (crates/segnode-phantom/src/chest.rs) and with a different anatomy and
image model, so the lung pipeline is checked on data it was not tuned on:

* anatomy from analytic shapes in patient coordinates (LPS, mm): an elliptic body with a fat layer, a
  thoracic cavity bounded by the chest wall, ribs in oblique bands, a vertebral body with its canal, a
  mediastinum whose width grows anteriorly, an ellipsoid heart with a pericardial fat shell, ascending /
  descending aorta, trachea and main bronchi, domed hemidiaphragms (the right higher) over liver, spleen
  and a gastric air bubble, apices as shrinking ellipses;
* the lung: parenchyma with smooth texture, and random straight vessels running from each hilum;
* disease, one per case: a juxtapleural mass (sphere against the posterolateral pleura), a hilar mass
  (against the mediastinum), a consolidated lower lobe (below an oblique fissure plane, with air
  bronchograms) and a free effusion (a dependent posterior layer thickest at the base);
* image model: 3 sub-slices averaged per slice (slice profile), Gaussian in-plane blur, correlated noise,
  stored as unsigned 16-bit with RescaleIntercept -1024; contrast or not (heart and aorta at 280 HU or at
  soft-tissue density, the hard case for a consolidated lobe against the heart).

Truth classes (uint8, k/j/i order as the files): 0 other, 1 right lung, 2 left lung, 3 airway, 5 right
lesion, 6 left lesion, 7 effusion (the lesion classes lie in the pleural cavity: they are what a lung mask
must cover; effusion is what it must leave out).

Usage: chest2.py --out DIR --case JSON   (writes DIR/series/*.dcm, DIR/truth.npy, DIR/truth.json)
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

PIXEL_MM = 1.5
MATRIX = 256
Z_RANGE = (20.0, 290.0)
RIGHT_LESION, LEFT_LESION, EFFUSION = 5, 6, 7


def default_case():
    return {
        "seed": 0,
        "slice_mm": 2.5,
        "contrast": True,
        "disease": None,  # {"kind": juxta|hilar|consolidation|effusion, "side": 0 right / 1 left, ...}
    }


class Chest:
    """The analytic anatomy of one case; `slab(z, X, Y)` gives (HU, class) on an in-plane grid."""

    def __init__(self, case):
        self.case = case
        rng = np.random.default_rng(case["seed"] + 1000)
        # hemidiaphragm base heights (mm): the right dome higher
        self.base = [52.0 + rng.uniform(-4, 4), 40.0 + rng.uniform(-4, 4)]
        self.heart_c = np.array([22.0 + rng.uniform(-5, 5), -28.0 + rng.uniform(-4, 4), 98.0])
        self.heart_r = np.array([60.0, 47.0, 50.0]) * rng.uniform(0.92, 1.08)
        self.vessels = []  # (p0, p1, radius, side)
        for side in (0, 1):
            sx = -1.0 if side == 0 else 1.0
            hil = np.array([sx * 45.0, 8.0, 150.0])
            n = 0
            while n < 28:
                p = np.array([sx * rng.uniform(30, 130), rng.uniform(-80, 90), rng.uniform(60, 250)])
                if self.cavity_point(p, side):
                    self.vessels.append((hil, p, rng.uniform(1.2, 2.8), side))
                    n += 1
        self.bronchograms = []
        d = case.get("disease")
        if d and d["kind"] == "consolidation":
            sx = -1.0 if d["side"] == 0 else 1.0
            for _ in range(5):
                p = np.array([sx * rng.uniform(50, 110), rng.uniform(20, 80), rng.uniform(60, 110)])
                self.bronchograms.append((np.array([sx * 48.0, 15.0, 135.0]), p, rng.uniform(1.2, 2.0)))

    # ---- shapes -------------------------------------------------------------------------------------
    def floor(self, side, X, Y):
        """The hemidiaphragm's height (mm): a dome over the side's centre, lower posteriorly."""
        ax = np.abs(X)
        dome = np.clip(1.0 - ((ax - 70.0) / 80.0) ** 2 - (Y / 95.0) ** 2, 0.0, None)
        return self.base[side] + 55.0 * dome - 0.15 * Y

    def thoracic(self, X, Y, z):
        """Inside the chest wall, with the apex shrinking above 230 mm."""
        inside = (X / 135.0) ** 2 + ((Y - 5.0) / 95.0) ** 2 < 1.0
        if z > 230.0:
            s = math.sqrt(max(0.0, 1.0 - ((z - 230.0) / 58.0) ** 2))
            inside &= ((np.abs(X) - 68.0) / (60.0 * s + 1e-6)) ** 2 + ((Y - 10.0) / (80.0 * s + 1e-6)) ** 2 < 1.0
        return inside

    def heart(self, X, Y, z, margin=0.0):
        c, r = self.heart_c, self.heart_r + margin
        return ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 < 1.0

    def aorta(self, X, Y, z, margin=0.0):
        m = np.zeros_like(X, dtype=bool)
        if z < 175.0:  # descending, left of the spine
            m |= (X - 22.0) ** 2 + (Y - 48.0) ** 2 < (12.0 + margin) ** 2
        if 115.0 < z < 175.0:  # ascending
            m |= (X - 8.0) ** 2 + (Y + 12.0) ** 2 < (15.0 + margin) ** 2
        if 168.0 < z < 185.0:  # the arch, from front to back
            m |= (np.abs(X - 15.0) < 12.0 + margin) & (Y > -25.0 - margin) & (Y < 58.0 + margin)
        return m

    def spine(self, X, Y, margin=0.0):
        return X**2 + (Y - 78.0) ** 2 < (21.0 + margin) ** 2

    def mediastinum(self, X, Y, z):
        """The central compartment between the lungs (besides heart, aorta, spine)."""
        half = 16.0 + np.clip(-Y, 0.0, None) * 0.12
        return np.abs(X) < half

    def cavity(self, X, Y, z, side):
        sx = -1.0 if side == 0 else 1.0
        m = self.thoracic(X, Y, z) & (X * sx > 0)
        m &= ~self.mediastinum(X, Y, z)
        m &= ~self.heart(X, Y, z, margin=3.0)
        m &= ~self.aorta(X, Y, z, margin=3.0)
        m &= ~self.spine(X, Y, margin=4.0)
        m &= z > self.floor(side, X, Y)
        return m

    def cavity_point(self, p, side):
        X, Y = np.array([[p[0]]]), np.array([[p[1]]])
        return bool(self.cavity(X, Y, p[2], side)[0, 0])

    @staticmethod
    def tube(X, Y, z, p0, p1, r):
        """Points of the plane z within r of the segment p0-p1 (a capsule)."""
        if z < min(p0[2], p1[2]) - r or z > max(p0[2], p1[2]) + r:
            return np.zeros_like(X, dtype=bool)
        d = p1 - p0
        wx, wy, wz = X - p0[0], Y - p0[1], z - p0[2]
        t = np.clip((wx * d[0] + wy * d[1] + wz * d[2]) / float(d @ d), 0.0, 1.0)
        return (wx - t * d[0]) ** 2 + (wy - t * d[1]) ** 2 + (wz - t * d[2]) ** 2 < r * r

    # ---- the disease ---------------------------------------------------------------------------------
    def lesion(self, X, Y, z, side):
        """(mask of lesion in this side's cavity, HU) or None."""
        d = self.case.get("disease")
        if not d or d["side"] != side:
            return None
        sx = -1.0 if side == 0 else 1.0
        cav = self.cavity(X, Y, z, side)
        kind = d["kind"]
        if kind == "juxta":
            r = d["diameter_mm"] / 2.0
            a = math.radians(d.get("angle_deg", 60.0))
            zc = d.get("z_mm", 165.0)
            # the cavity boundary along a ray from the side's centre, posterolaterally
            cx, cy = sx * 68.0, 5.0
            t = 0.0
            while True:
                px, py = cx + sx * t * math.cos(a), cy + t * math.sin(a)
                if not self.thoracic(np.array([[px]]), np.array([[py]]), zc)[0, 0]:
                    break
                t += 0.5
            c = (cx + sx * (t - 0.3 * r) * math.cos(a), cy + (t - 0.3 * r) * math.sin(a), zc)
            m = (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r
            return m & cav, d.get("hu", 30.0)
        if kind == "hilar":
            r = d["diameter_mm"] / 2.0
            c = (sx * (30.0 + 0.55 * r), 0.0, d.get("z_mm", 150.0))
            m = (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r
            return m & cav, d.get("hu", 35.0)
        if kind == "consolidation":
            lower = z < 118.0 + 0.7 * Y
            return lower & cav, d.get("hu", 38.0)
        if kind == "effusion":
            depth = d["depth_mm"] * float(np.clip((self.base[side] + 110.0 - z) / 110.0, 0.0, 1.0))
            if depth <= 0:
                return np.zeros_like(cav), 12.0
            inner = (X / 135.0) ** 2 + ((Y - 5.0) / 95.0) ** 2 < ((95.0 - depth) / 95.0) ** 2
            return cav & ~inner & (Y > -10.0), d.get("hu", 12.0)
        raise ValueError(kind)

    def slab(self, z, X, Y):
        c = self.case
        blood = float(c.get("blood_hu", 280.0)) if c["contrast"] else 42.0
        hu = np.full(X.shape, -1000.0)
        cls = np.zeros(X.shape, np.uint8)
        body = (X / 165.0) ** 2 + ((Y - 5.0) / 120.0) ** 2 < 1.0
        hu[body] = -95.0  # subcutaneous fat
        muscle = (X / 152.0) ** 2 + ((Y - 5.0) / 108.0) ** 2 < 1.0
        hu[muscle] = 48.0
        # ribs: oblique bands just outside the cavity
        ring = muscle & ~((X / 141.0) ** 2 + ((Y - 5.0) / 101.0) ** 2 < 1.0)
        band = np.mod(z + 0.25 * Y + 400.0, 30.0) < 11.0
        hu[ring & band] = 650.0
        # the cavity's content before the lungs: mediastinal fat and soft tissue
        th = self.thoracic(X, Y, z)
        hu[th] = 35.0
        hu[th & self.mediastinum(X, Y, z)] = -60.0
        for side in (0, 1):
            f = self.floor(side, X, Y)
            below = th & (z <= f) & ((X < 0) if side == 0 else (X >= 0))
            hu[below] = 58.0 if side == 0 else 46.0  # liver / spleen
        gas = (X - 62.0) ** 2 + (Y + 15.0) ** 2 + (z - (self.base[1] + 15.0)) ** 2 < 22.0**2
        hu[gas & th] = -1000.0
        hu[self.heart(X, Y, z, margin=3.0)] = -80.0  # pericardial fat
        hrt = self.heart(X, Y, z)
        hu[hrt] = 45.0
        hu[self.heart(X, Y, z, margin=-11.0)] = blood
        hu[self.aorta(X, Y, z)] = blood
        sp = self.spine(X, Y)
        hu[sp] = 320.0
        hu[sp & ~self.spine(X, Y, margin=-3.0)] = 700.0
        hu[X**2 + (Y - 110.0) ** 2 < 10.0**2] = 25.0
        # lungs
        for side in (0, 1):
            cav = self.cavity(X, Y, z, side)
            hu[cav] = -855.0
            cls[cav] = 1 + side
            for p0, p1, r, s in self.vessels:
                if s == side:
                    v = self.tube(X, Y, z, p0, p1, r) & cav
                    hu[v] = blood if r > 2.2 else 40.0
            les = self.lesion(X, Y, z, side)
            if les is not None:
                m, lhu = les
                kind = c["disease"]["kind"]
                hu[m] = lhu
                cls[m] = EFFUSION if kind == "effusion" else (RIGHT_LESION if side == 0 else LEFT_LESION)
                for p0, p1, r in self.bronchograms:
                    b = self.tube(X, Y, z, p0, p1, r) & m
                    hu[b] = -880.0
        # airways: trachea above the carina, main bronchi below it
        if z > 175.0:
            tr = X**2 + (Y - 12.0) ** 2 < 9.0**2
            hu[tr & th] = -1000.0
            cls[tr & th] = 3
        for sx in (-1.0, 1.0):
            b = self.tube(X, Y, z, np.array([0.0, 12.0, 176.0]), np.array([sx * 46.0, 10.0, 150.0]), 6.0)
            b &= th & ~(cls == (1 if sx < 0 else 2))
            hu[b] = -1000.0
            cls[b] = 3
        return hu, cls


def generate(case):
    """(stored uint16 values k/j/i, truth uint8, info)."""
    rng = np.random.default_rng(case["seed"])
    chest = Chest(case)
    ax = (np.arange(MATRIX) - (MATRIX - 1) / 2.0) * PIXEL_MM
    X, Y = np.meshgrid(ax, ax)  # rows: y (posterior +), columns: x (patient left +)
    s = case["slice_mm"]
    zs = np.arange(Z_RANGE[0], Z_RANGE[1], s)
    vals = np.zeros((len(zs), MATRIX, MATRIX), np.uint16)
    truth = np.zeros((len(zs), MATRIX, MATRIX), np.uint8)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (len(zs), MATRIX, MATRIX)), (1.0, 3.0, 3.0))
    tex /= tex.std() + 1e-9
    for k, z in enumerate(zs):
        acc = np.zeros(X.shape)
        for sub in (-s / 3.0, 0.0, s / 3.0):
            hu, cls = chest.slab(z + sub, X, Y)
            acc += hu
            if sub == 0.0:
                truth[k] = cls
        hu = acc / 3.0
        lung = (truth[k] == 1) | (truth[k] == 2)
        hu[lung] += 25.0 * tex[k][lung]
        hu = ndimage.gaussian_filter(hu, 0.7)
        noise = ndimage.gaussian_filter(rng.normal(0, 1, X.shape), 0.8)
        hu += 14.0 * noise / (noise.std() + 1e-9)
        vals[k] = np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)
    info = {
        "case": case,
        "spacing": [PIXEL_MM, PIXEL_MM, s],
        "origin": [float(ax[0]), float(ax[0]), float(zs[0])],
        "voxel_ml": PIXEL_MM * PIXEL_MM * s / 1000.0,
    }
    return vals, truth, info


def write_series(vals, info, folder):
    """Single-frame CT Image Storage files, one per slice, unsigned 16-bit with intercept -1024."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tag = json.dumps(info["case"], sort_keys=True)
    study, series, frame = (generate_uid(entropy_srcs=[f"chest2-{tag}-{x}"]) for x in "abc")
    ox, oy, oz = info["origin"]
    s = info["spacing"][2]
    for k in range(vals.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        sop = generate_uid(entropy_srcs=[f"chest2-{tag}-slice-{k}"])
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName = "PHANTOM^CHEST2"
        ds.PatientID = "CH2"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = "CH2"
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "segnode chest2 phantom"
        ds.BodyPartExamined = "CHEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{ox:.4f}", f"{oy:.4f}", f"{oz + k * s:.4f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [f"{PIXEL_MM:.4f}", f"{PIXEL_MM:.4f}"]
        ds.SliceThickness = f"{s:.4f}"
        ds.KVP = "120"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = vals.shape[1], vals.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = np.ascontiguousarray(vals[k]).tobytes()
        ds.save_as(folder / f"c{k:04d}.dcm", enforce_file_format=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", default="{}", help="JSON overriding default_case()")
    a = ap.parse_args()
    case = default_case()
    case.update(json.loads(a.case))
    vals, truth, info = generate(case)
    out = Path(a.out)
    write_series(vals, info, out / "series")
    np.save(out / "truth.npy", truth)
    (out / "truth.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
