"""What the segmentation benchmarks and their scipy peers share: reading a single-frame CT folder in slice
order, a SEG back onto its source grid, Dice, and running a process with its own peak RSS."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom


def read_sorted(folder):
    """The CT slices of a folder (files that are not DICOM, or have no position, left out), sorted along
    the normal of the first slice's orientation; returns (slices, row, col, normal)."""
    dss = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            try:
                dss.append(pydicom.dcmread(p))
            except Exception:
                pass
    dss = [d for d in dss if "ImagePositionPatient" in d]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    return dss, row, col, normal


def seg_labels(seg_path, series_dir, shape, code):
    """Label map of a SEG on the source grid (frames mapped through their source references); `code`
    turns a segment label into the map's value."""
    srcs = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(Path(series_dir).iterdir())]
    iop = np.array(srcs[0].ImageOrientationPatient, float)
    n = np.cross(iop[:3], iop[3:])
    srcs.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), n)))
    idx = {d.SOPInstanceUID: k for k, d in enumerate(srcs)}
    ds = pydicom.dcmread(seg_path)
    names = {s.SegmentNumber: s.SegmentLabel for s in ds.SegmentSequence}
    px = ds.pixel_array
    if px.ndim == 2:
        px = px[None]
    out = np.zeros(shape, np.uint8)
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        k = idx[fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        out[k][px[f] > 0] = code(names[fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber])
    return out


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def run_rss(cmd):
    """Run a command with wait4, so the peak RSS is that of this child only; returns (stdout, peak RSS MB,
    wall s). Exits the benchmark when the command fails."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{cmd[0]} failed with {code}")
    return out, ru.ru_maxrss / 1024.0, time.perf_counter() - t0
