"""Benchmark of `segnode segment --pipeline lung` against the scipy.ndimage peer (benches/lung_scipy.py).

Generates the phantoms with `segnode-phantom` (512x512x300 chest at 1 mm, 512x512x600 thin-slice chest at
0.6 mm; `--quick` uses 256x256 matrices), runs both tools in separate processes on the same series (segnode
`--runs` times, median reported), checks both against the ground truth (Dice per lung) and prints a table
with the ratios. Figures: load (decode) time, segment time, peak RSS of the process, RSS relative to the
int16 volume.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

from benchlib import dice, seg_labels

HERE = Path(__file__).resolve().parent



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segnode", required=True)
    ap.add_argument("--phantom", required=True, help="the segnode-phantom binary (crates/segnode-phantom)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="256x256 matrices (smoke test)")
    a = ap.parse_args()
    matrix = 256 if a.quick else 512
    cases = [
        ("chest %dx%dx300" % (matrix, matrix), ["--variant", "standard", "--slices", "300", "--slice-spacing", "1.0"]),
        ("thin %dx%dx600" % (matrix, matrix), ["--variant", "thin", "--slices", "600", "--slice-spacing", "0.6"]),
    ]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, extra in cases:
        tag = name.split()[0] + str(matrix)
        series = out / tag
        truth_path = out / (tag + ".truth")
        if not series.exists():
            subprocess.run([a.phantom, "--matrix", str(matrix), "--out", str(series), "--truth", str(truth_path)]
                           + extra, check=True, stdout=subprocess.DEVNULL)
        files = sorted(series.iterdir())
        d0 = pydicom.dcmread(files[0], stop_before_pixels=True)
        shape = (len(files), d0.Rows, d0.Columns)
        truth = np.fromfile(truth_path, np.uint8).reshape(shape)
        vol_mb = np.prod(shape) * 2 / 2**20
        # segnode
        runs = []
        seg_path = out / (tag + ".seg.dcm")
        for _ in range(a.runs):
            r = subprocess.run([a.segnode, "segment", "--pipeline", "lung", "--input", str(series), "--output", str(seg_path)],
                               check=True, capture_output=True, text=True)
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        lab = seg_labels(seg_path, series, shape, lambda name: 1 if name == "Right lung" else 2)
        sn = {
            "load": statistics.median(x["load_ms"] for x in runs) / 1e3,
            "segment": statistics.median(x["segment_ms"] for x in runs) / 1e3,
            "segment_min": min(x["segment_ms"] for x in runs) / 1e3,
            "rss": max(x["peak_rss_mb"] for x in runs),
            "dr": dice(lab == 1, truth == 1), "dl": dice(lab == 2, truth == 2),
        }
        # scipy peer
        npy = out / (tag + ".scipy.npy")
        r = subprocess.run([a.python, str(HERE / "lung_scipy.py"), str(series), str(npy)], check=True,
                           capture_output=True, text=True)
        pj = json.loads(r.stdout.strip().splitlines()[-1])
        pl = np.load(npy)
        py = {"load": pj["load_ms"] / 1e3, "segment": pj["segment_ms"] / 1e3, "segment_min": pj["segment_ms"] / 1e3,
              "rss": pj["peak_rss_mb"], "dr": dice(pl == 1, truth == 1), "dl": dice(pl == 2, truth == 2)}
        rows.append((name, vol_mb, sn, py))

    print()
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; segnode median of {a.runs} runs")
    hdr = f"{'volume':<20} {'tool':<8} {'load s':>7} {'segment s':>10} {'peak RSS MB':>12} {'RSS/int16':>10} {'Dice R':>7} {'Dice L':>7}"
    print(hdr)
    print("-" * len(hdr))
    for name, vol_mb, sn, py in rows:
        for tool, m in (("segnode", sn), ("scipy", py)):
            print(f"{name:<20} {tool:<8} {m['load']:>7.2f} {m['segment']:>10.3f} {m['rss']:>12.0f} {m['rss'] / vol_mb:>10.2f} "
                  f"{m['dr']:>7.4f} {m['dl']:>7.4f}")
        print(f"{'':<20} {'ratio':<8} {py['load'] / sn['load']:>6.1f}x {py['segment'] / sn['segment']:>9.1f}x "
              f"{py['rss'] / sn['rss']:>11.1f}x   (scipy / segnode)")
    print()
    print("targets: segment 512x512x300 < 1 s (2 cores), >= 10x faster than scipy, peak RSS < 3x the int16 volume")


if __name__ == "__main__":
    main()
