#!/usr/bin/env python3
"""A stand-in "site model" for the external pipeline tests, following segnode's exchange contract.

usage: test_model.py INPUT OUTPUT --mode ok|slow|hang|garbage [--sleep S]

ok:      label 1 = bone (HU > 300) as a coded segment; writes output/labels.raw + output/segments.json
slow:    sleeps --sleep seconds first, then as ok
hang:    never finishes (segnode must kill it at its timeout)
garbage: writes a labels file of the wrong size and an unparsable segments.json
"""
import argparse
import json
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--sleep", type=float, default=0)
    ap.add_argument("--tag", default="", help="ignored; lets a test find this process")
    a = ap.parse_args()
    if a.mode == "hang":
        while True:
            time.sleep(1)
    if a.mode == "garbage":
        with open(os.path.join(a.output, "labels.raw"), "wb") as f:
            f.write(b"\x01" * 100)
        with open(os.path.join(a.output, "segments.json"), "w") as f:
            f.write("this is not json")
        return
    if a.mode == "slow":
        time.sleep(a.sleep)
    meta = json.load(open(os.path.join(a.input, "volume.json")))
    shape = tuple(meta["shape"])
    hu = np.fromfile(os.path.join(a.input, "volume.raw"), dtype="<i2").reshape(shape)
    labels = (hu > 300).astype(np.uint8)
    labels.tofile(os.path.join(a.output, "labels.raw"))
    json.dump({
        "algorithm": {"name": "test bone threshold", "version": "1.0"},
        "segments": [{
            "label": 1, "name": "Bone",
            "category": {"code": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"},
            "type": {"code": "272673000", "scheme": "SCT", "meaning": "Bone"},
        }],
    }, open(os.path.join(a.output, "segments.json"), "w"))
    print(f"bone voxels: {int(labels.sum())}", flush=True)


if __name__ == "__main__":
    main()
