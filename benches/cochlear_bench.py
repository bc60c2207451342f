"""Benchmark of `segnode segment --pipeline cochlear` against the scipy peer (benches/cochlear_scipy.py).

Generates the 400x400x400 CBCT phantom at 0.2 mm (both ears; `--cube N` for another size) with
`segnode-phantom --kind cbct --cbct-variant bench`, runs both tools in separate processes on the same
series (segnode `--runs` times, median), measures each process's peak RSS with wait4, checks both against
the phantom's truth (Dice per side, contact count) and prints a table with the scipy / segnode ratios.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import dice, run_rss, seg_labels

HERE = Path(__file__).resolve().parent


def run(cmd):
    """Run a command; returns (stdout, peak RSS MB, wall s) of that process alone."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    # communicate() reaped the child; its rusage came with the wait
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {err}")
    return out, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segnode", required=True)
    ap.add_argument("--phantom", required=True, help="the segnode-phantom binary (crates/segnode-phantom)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cube", type=int, default=400)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"cbct{a.cube}"
    series, truth_path, meta = out / tag, out / (tag + ".truth"), out / (tag + ".json")
    if not series.exists():
        r, _ = run([a.phantom, "--kind", "cbct", "--cbct-variant", "bench", "--cube", str(a.cube),
                    "--seed", "42", "--out", str(series), "--truth", str(truth_path)])
        meta.write_text(r)
    ph = json.loads(meta.read_text())
    shape = tuple(ph["shape"])
    truth = np.fromfile(truth_path, np.uint8).reshape(shape)
    want = {x["side"]: len(x["contacts"]) for x in ph["arrays"]}
    vol_mb = np.prod(shape) * 2 / 2**20

    runs = []
    seg_path = out / (tag + ".seg.dcm")
    for _ in range(a.runs):
        o, rss, wall = run_rss([a.segnode, "segment", "--pipeline", "cochlear", "--input", str(series),
                                "--output", str(seg_path)])
        j = json.loads(o.strip().splitlines()[-1])
        runs.append((j, rss, wall))
    j = runs[-1][0]
    lab = seg_labels(seg_path, series, shape, lambda name: 2 if name.startswith("Left") else 1)
    found = {x["side"]: x["contact_count"] for x in j["details"]["arrays"]}
    sn = {
        "load": statistics.median(r[0]["load_ms"] for r in runs) / 1e3,
        "segment": statistics.median(r[0]["segment_ms"] for r in runs) / 1e3,
        "rss": max(r[1] for r in runs),
        "dr": dice(lab == 1, truth == 1), "dl": dice(lab == 2, truth == 2),
        "cr": found.get("right", 0), "cl": found.get("left", 0),
    }
    npy = out / (tag + ".scipy.npy")
    o, rss, _ = run_rss([a.python, str(HERE / "cochlear_scipy.py"), str(series), str(npy)])
    pj = json.loads(o.strip().splitlines()[-1])
    pl = np.load(npy)
    pf = {x["side"]: x["contacts"] for x in pj["arrays"]}
    py = {"load": pj["load_ms"] / 1e3, "segment": pj["segment_ms"] / 1e3, "rss": rss,
          "dr": dice(pl == 1, truth == 1), "dl": dice(pl == 2, truth == 2),
          "cr": pf.get("right", 0), "cl": pf.get("left", 0)}

    name = "x".join(str(s) for s in shape) + " 0.2mm"
    print()
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; segnode median of {a.runs} runs; "
          f"truth contacts R {want.get('right', 0)} L {want.get('left', 0)}")
    hdr = (f"{'volume':<18} {'tool':<8} {'load s':>7} {'seg+contacts s':>15} {'total s':>8} {'peak RSS MB':>12} "
           f"{'RSS/int16':>10} {'Dice R':>7} {'Dice L':>7} {'contacts R/L':>13}")
    print(hdr)
    print("-" * len(hdr))
    for tool, m in (("segnode", sn), ("scipy", py)):
        print(f"{name:<18} {tool:<8} {m['load']:>7.2f} {m['segment']:>15.3f} {m['load'] + m['segment']:>8.2f} "
              f"{m['rss']:>12.0f} {m['rss'] / vol_mb:>10.2f} {m['dr']:>7.4f} {m['dl']:>7.4f} "
              f"{str(m['cr']) + '/' + str(m['cl']):>13}")
    print(f"{'':<18} {'ratio':<8} {py['load'] / sn['load']:>6.1f}x {py['segment'] / sn['segment']:>14.1f}x "
          f"{(py['load'] + py['segment']) / (sn['load'] + sn['segment']):>7.1f}x {py['rss'] / sn['rss']:>11.1f}x"
          f"   (scipy / segnode)")
    print()
    print("target (issue 5): load + segment + contacts of 400^3 at 0.2 mm under 1 s on 2 cores")


if __name__ == "__main__":
    main()
