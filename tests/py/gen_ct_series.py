#!/usr/bin/env python3
"""Write a deterministic synthetic CT series (Explicit VR Little Endian, int16) for the network tests
and benchmarks.

usage: gen_ct_series.py OUT_DIR --slices N [--size 512] [--seed 1] [--spacing 1.0] [--announce]
           [--series-uid UID] [--study-uid UID] [--start K]

Each slice is a body-like ellipse with noise; files are named by a hash so that nothing can rely on
the file order. --announce writes ImagesInAcquisition = N. --start K begins at slice K (to extend a
series with late instances under the same UIDs).
"""
import argparse
import hashlib
import os

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, CTImageStorage

ROOT = "2.25"


def uid(seed, *parts):
    h = hashlib.sha256(("/".join(str(p) for p in (seed,) + parts)).encode()).digest()
    return f"{ROOT}.{int.from_bytes(h[:15], 'big')}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spacing", type=float, default=1.0)
    ap.add_argument("--announce", action="store_true")
    ap.add_argument("--series-uid")
    ap.add_argument("--study-uid")
    ap.add_argument("--start", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    n = a.size
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    body = ((xx - n / 2) / (0.42 * n)) ** 2 + ((yy - n / 2) / (0.32 * n)) ** 2 <= 1.0
    study = a.study_uid or uid(a.seed, "study")
    series = a.series_uid or uid(a.seed, "series")
    frame = uid(a.seed, "frame")
    for k in range(a.start, a.start + a.slices):
        img = np.full((n, n), -1000, dtype=np.int16)
        img[body] = 40
        img += rng.normal(0, 15, size=(n, n)).astype(np.int16)
        meta = FileMetaDataset()
        sop = uid(a.seed, series, "sop", k)
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = hashlib.md5(sop.encode()).hexdigest()[:12] + ".dcm"
        ds = FileDataset(os.path.join(a.out, name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyDate = "20260101"
        ds.Modality = "CT"
        ds.Manufacturer = "segnode-tests"
        ds.StudyDescription = "synthetic"
        ds.SeriesDescription = f"synthetic CT seed {a.seed}"
        ds.PatientName = f"TEST^SERIES{a.seed}"
        ds.PatientID = f"TEST{a.seed}"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = a.spacing
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        if a.announce:
            ds.ImagesInAcquisition = a.slices
        ds.ImagePositionPatient = [-0.5 * n * 0.7, -0.5 * n * 0.7, -k * a.spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = n
        ds.Columns = n
        ds.PixelSpacing = [0.7, 0.7]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = img.tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
    print(series)


if __name__ == "__main__":
    main()
