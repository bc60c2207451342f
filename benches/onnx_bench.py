#!/usr/bin/env python3
"""In-process ONNX inference (segnode, tract) beside onnxruntime in the same run (issue 17).

A 3D U-Net-sized model (tests/py/onnx_fixtures.py unet: 4 levels, ~22 MB of weights at base 16, 128^3
patches) on a 512 x 512 x 200 chest CT phantom (segnode-phantom), resampled to --spacing mm:
- segnode: `segnode segment --model` (normalise, resample, sliding window with Gaussian blending,
  back to the source grid, SEG written), its inference time from the job details and its peak RSS;
- onnxruntime: the same sliding window and blending (tests/py/onnx_compare.py) on segnode's own model-grid
  input, in its own process (peak RSS of that process), with as many threads as segnode uses.
Prints the table and the largest probability difference between the two.

    benches/onnx.sh [--spacing 2.0] [--base 16] [--patch 128] [--slices 200] [--runs 1]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "py"))
from benchlib import run_rss  # noqa: E402

PEER = r'''
import json, os, resource, sys, time
import numpy as np, onnxruntime as ort, tomllib
sys.path.insert(0, sys.argv[4])
from onnx_compare import sliding
manifest, dump, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = tomllib.load(open(manifest, "rb"))
grid = json.load(open(os.path.join(dump, "grid.json")))
x = np.fromfile(os.path.join(dump, "input.f32"), "<f4").reshape(grid["input_shape"])
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
t0 = time.perf_counter()
s = ort.InferenceSession(os.path.join(os.path.dirname(manifest), m["model"]["file"]), o, providers=["CPUExecutionProvider"])
t1 = time.perf_counter()
p, patches = sliding(s, x, m)
t2 = time.perf_counter()
ref = np.fromfile(os.path.join(dump, "probabilities.f32"), "<f4").reshape(grid["probabilities_shape"])
print(json.dumps({"load_s": t1 - t0, "inference_s": t2 - t1, "patches": patches,
                  "max_abs_diff": float(np.abs(p - ref).max())}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segnode", required=True)
    ap.add_argument("--phantom", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default=str(HERE / "out" / "onnx"))
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    series = out / f"chest512x{a.slices}"
    if not series.exists():
        subprocess.run([a.phantom, "--matrix", "512", "--out", str(series), "--truth", str(out / "truth.raw"),
                        "--variant", "standard", "--slices", str(a.slices), "--slice-spacing", "1.25"],
                       check=True, stdout=subprocess.DEVNULL)
    model = out / f"unet{a.base}_{a.patch}.onnx"
    if not model.exists():
        subprocess.run([a.python, str(HERE.parent / "tests/py/onnx_fixtures.py"), "unet", str(model),
                        "--base", str(a.base), "--patch", str(a.patch)], check=True, stdout=subprocess.DEVNULL)
    manifest = out / "unet.toml"
    manifest.write_text(f'''
[model]
file = "{model.name}"
name = "BenchUNet"
version = "1"
[input]
spacing_mm = [{a.spacing}, {a.spacing}, {a.spacing}]
orientation = "LPS"
patch = [{a.patch}, {a.patch}, {a.patch}]
overlap = 0.5
[[input.channels]]
normalise = {{ kind = "window", low = -1000, high = 400 }}
[output]
labels = [
  {{ channel = 1, name = "A", category = {{ code = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}, type = {{ code = "85756007", scheme = "SCT", meaning = "Tissue" }} }},
  {{ channel = 2, name = "B", category = {{ code = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}, type = {{ code = "85756007", scheme = "SCT", meaning = "Tissue" }} }},
]
''')
    threads = os.cpu_count() or 1
    rows = []
    for run in range(a.runs):
        dump = out / "dump"
        stdout, rss, wall = run_rss([a.segnode, "segment", "--model", str(manifest), "--input", str(series),
                                     "--output-dir", str(out / "result"), "--forms", "seg", "--dump-dir", str(dump)])
        v = json.loads(stdout.strip().splitlines()[-1])
        d = v["details"]
        rows.append(("segnode (tract)", d["patches"], d["load_model_ms"] / 1e3, d["inference_ms"] / 1e3,
                     v["segment_ms"] / 1e3, rss, None))
        stdout, rss, wall = run_rss([a.python, "-c", PEER, str(manifest), str(dump), str(threads),
                                     str(HERE.parent / "tests" / "py")])
        p = json.loads(stdout.strip().splitlines()[-1])
        rows.append(("onnxruntime", p["patches"], p["load_s"], p["inference_s"], None, rss, p["max_abs_diff"]))
    print(f"\nONNX inference: {model.name} ({model.stat().st_size / 2**20:.1f} MB), 512 x 512 x {a.slices} CT at "
          f"{a.spacing} mm -> model grid {d['model_grid']}, {a.patch}^3 patches, overlap 0.5, {threads} threads")
    print(f"| runtime | patches | model load s | inference s | whole segment s | peak RSS MB | inference ratio (ort / segnode) |")
    print("|---|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        s, o = rows[i], rows[i + 1]
        for r in (s, o):
            ratio = o[3] / s[3] if r is s else 1.0
            whole = f"{r[4]:.1f}" if r[4] is not None else "—"
            print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.1f} | {whole} | {r[5]:.0f} | {ratio:.2f} |")
        print(f"largest probability difference segnode vs onnxruntime: {o[6]:.2e}")


if __name__ == "__main__":
    main()
