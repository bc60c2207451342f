"""Issue 19 on data the lung pipeline was not tuned on: `segnode segment --pipeline lung` on chests from the
second, independent generator (tests/py/chest2.py), with a juxtapleural mass, a hilar mass, a consolidated
lower lobe or a free effusion on either side, with and without contrast, at 1.25-5 mm slices.

Prints per case: the lesion's volume and how much of it the lung mask of its side covers (target >= 95 %),
the effusion inside the lung mask (target <= 5 %) and the effusion segment's volume, the Dice of each lung
against the truth (the pleural cavity's lung and lesion of that side), and the pipeline's notes.

Usage: .venv/bin/python benches/lung_disease2.py --segnode target/release/segnode [--only NAME,...]
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "py"))

from benchlib import dice, seg_labels  # noqa: E402
import chest2  # noqa: E402


def cases():
    out = []
    for contrast in (True, False):
        c = "contrast" if contrast else "plain"
        out.append((f"healthy {c} 2.5", {"contrast": contrast, "slice_mm": 2.5}))
        for side, sn in ((0, "R"), (1, "L")):
            for dia in (30, 50, 80):
                out.append((f"juxta {dia} mm {sn} {c} 2.5", {"contrast": contrast, "slice_mm": 2.5,
                            "disease": {"kind": "juxta", "side": side, "diameter_mm": dia}}))
            for dia in (40, 60):
                out.append((f"hilar {dia} mm {sn} {c} 2.5", {"contrast": contrast, "slice_mm": 2.5,
                            "disease": {"kind": "hilar", "side": side, "diameter_mm": dia}}))
            for sl in (1.25, 5.0):
                out.append((f"consolidated lower lobe {sn} {c} {sl}", {"contrast": contrast, "slice_mm": sl,
                            "disease": {"kind": "consolidation", "side": side}}))
            out.append((f"effusion 35 mm {sn} {c} 2.5", {"contrast": contrast, "slice_mm": 2.5,
                        "disease": {"kind": "effusion", "side": side, "depth_mm": 35.0}}))
    return out


def code(label):
    if label == "Right lung":
        return 1
    if label == "Left lung":
        return 2
    if label.endswith("pleural effusion"):
        return 7
    return 9


def run_case(segnode, name, over, seed, work):
    case = chest2.default_case()
    case.update(over)
    case["seed"] = seed
    vals, truth, info = chest2.generate(case)
    folder = work / "series"
    chest2.write_series(vals, info, folder)
    seg = work / "seg.dcm"
    p = subprocess.run([segnode, "segment", "--pipeline", "lung", "--input", str(folder), "--output", str(seg)],
                       capture_output=True, text=True)
    line = (p.stdout.strip().splitlines() or ["{}"])[-1]
    report = json.loads(line) if line.startswith("{") else {}
    row = {"case": name, "seed": seed}
    if p.returncode != 0 or not report.get("ok", True) or not seg.exists():
        row["error"] = (report.get("error") or p.stderr.strip().splitlines()[-1:] or ["?"])
        return row
    lab = seg_labels(seg, folder, truth.shape, code)
    vml = info["voxel_ml"]
    d = case.get("disease")
    if d and d["kind"] != "effusion":
        les = truth == (5 if d["side"] == 0 else 6)
        row["lesion_ml"] = les.sum() * vml
        row["cover"] = (les & (lab == 1 + d["side"])).sum() / max(les.sum(), 1)
    if d and d["kind"] == "effusion":
        eff = truth == 7
        row["lesion_ml"] = eff.sum() * vml
        row["effusion_in_lung"] = (eff & ((lab == 1) | (lab == 2))).sum() / max(eff.sum(), 1)
        row["effusion_seg_ml"] = (lab == 7).sum() * vml
    row["dice"] = [dice(lab == 1, (truth == 1) | (truth == 5)), dice(lab == 2, (truth == 2) | (truth == 6))]
    row["notes"] = report.get("notes", [])
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segnode", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated substrings of case names")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = []
    print(f"{'case':44} {'lesion mL':>9} {'covered':>8} {'eff. in lung':>12} {'eff. seg mL':>11} "
          f"{'Dice R':>7} {'Dice L':>7}  notes")
    for name, over in cases():
        if a.only and not any(s in name for s in a.only.split(",")):
            continue
        with tempfile.TemporaryDirectory() as t:
            r = run_case(a.segnode, name, over, a.seed, Path(t))
        rows.append(r)
        if "error" in r:
            print(f"{name:44} ERROR {r['error']}")
            continue
        cov = f"{100 * r['cover']:.1f} %" if "cover" in r else "-"
        eff = f"{100 * r['effusion_in_lung']:.1f} %" if "effusion_in_lung" in r else "-"
        effml = f"{r['effusion_seg_ml']:.0f}" if "effusion_seg_ml" in r else "-"
        les = f"{r['lesion_ml']:.1f}" if "lesion_ml" in r else "-"
        notes = "; ".join(n for n in r["notes"] if not n.startswith("airway removed"))
        print(f"{name:44} {les:>9} {cov:>8} {eff:>12} {effml:>11} {r['dice'][0]:7.4f} {r['dice'][1]:7.4f}  {notes}",
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
