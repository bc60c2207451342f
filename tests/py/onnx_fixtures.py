#!/usr/bin/env python3
"""Fixtures of the ONNX model tests, built with the `onnx` package (independent of segnode's code).

    onnx_fixtures.py models OUTDIR    small models with fixed weights:
        net2ch.onnx       [1, 2, 16, 16, 16] -> Conv3d 3^3 (2->4) -> Relu -> Conv3d 1^3 (4->3) -> Softmax(axis 1)
        threshold.onnx    [1, 1, 24, 24, 24] -> Conv3d 1^3 (1->2): logit_1 = 20 (x - 0.5) -> Softmax
        threshold2.onnx   [1, 2, 24, 24, 24] -> logit_1 = 20 (x0 + x1 - 1) -> Softmax (bright in both)
        unsupported.onnx  net2ch's graph with an operator no runtime knows (Frobnicate)
    onnx_fixtures.py unet FILE.onnx [--base 16] [--patch 128]
        a 3D U-Net-sized model (4 levels, two 3^3 convolutions per level, ConvTranspose up, skip
        concatenations, softmax head, about 22 MB of weights at base 16) with seeded weights: benchmarks
    onnx_fixtures.py mr OUTDIR TRUTH.json [--seed N] [--companion FLAIR_DIR]
        an MR Image Storage series (axial, 1.0 x 1.0 mm pixels, 2.0 mm slices, no rescale): a head-like
        ellipsoid with a bright sphere; TRUTH.json gives the sphere (centre LPS mm, radius mm)
"""
import argparse
import json
import math
import os
import sys

import numpy as np


def conv(name, x, w, b, out, pads):
    from onnx import helper, numpy_helper
    inits = [numpy_helper.from_array(w.astype(np.float32), f"{name}_w"),
             numpy_helper.from_array(b.astype(np.float32), f"{name}_b")]
    node = helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], name=name,
                            kernel_shape=list(w.shape[2:]), pads=pads)
    return node, inits


def save(graph_nodes, inits, inp, out, path, opset=13):
    import onnx
    from onnx import helper
    g = helper.make_graph(graph_nodes, os.path.basename(path), [inp], [out], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="segnode-tests")
    m.ir_version = 8
    onnx.save(m, path)


def net2ch(path, unsupported=False):
    from onnx import helper, TensorProto
    rng = np.random.default_rng(7)
    p = 16
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, p, p, p])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3, p, p, p])
    n1, i1 = conv("c1", "image", rng.normal(0, 0.35, (4, 2, 3, 3, 3)), rng.normal(0, 0.1, 4), "h1", [1] * 6)
    relu = helper.make_node("Relu", ["h1"], ["h2"], name="relu")
    n2, i2 = conv("c2", "h2", rng.normal(0, 1.0, (3, 4, 1, 1, 1)), np.array([0.3, -0.2, 0.0]), "logits", [0] * 6)
    last_in = "logits"
    nodes = [n1, relu, n2]
    if unsupported:
        nodes.append(helper.make_node("Frobnicate", ["logits"], ["frob"], name="frob"))
        last_in = "frob"
    nodes.append(helper.make_node("Softmax", [last_in], ["probabilities"], name="softmax", axis=1))
    save(nodes, i1 + i2, inp, out, path)


def threshold(path):
    from onnx import helper, TensorProto
    p = 24
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, p, p, p])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, p, p, p])
    w = np.array([0.0, 20.0]).reshape(2, 1, 1, 1, 1)
    n1, i1 = conv("c", "x", w, np.array([0.0, -10.0]), "logits", [0] * 6)
    sm = helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1)
    save([n1, sm], i1, inp, out, path)


def unet(path, base, patch):
    """Encoder-decoder: levels base, 2b, 4b, 8b, bottleneck 16b; He-initialised seeded weights."""
    from onnx import helper, numpy_helper, TensorProto
    rng = np.random.default_rng(3)
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def conv3(x, cin, cout):
        n = name("conv")
        w = rng.normal(0, math.sqrt(2.0 / (cin * 27)), (cout, cin, 3, 3, 3))
        node, i = conv(n, x, w, np.zeros(cout), n + "_o", [1] * 6)
        r = name("relu")
        nodes.extend([node, helper.make_node("Relu", [n + "_o"], [r], name=r)])
        inits.extend(i)
        return r

    def block(x, cin, cout):
        return conv3(conv3(x, cin, cout), cout, cout)

    widths = [base, base * 2, base * 4, base * 8, base * 16]
    x, cin, skips = "image", 1, []
    for lvl, w in enumerate(widths):
        x = block(x, cin, w)
        cin = w
        if lvl < len(widths) - 1:
            skips.append((x, w))
            p = name("pool")
            nodes.append(helper.make_node("MaxPool", [x], [p], name=p, kernel_shape=[2, 2, 2], strides=[2, 2, 2]))
            x = p
    for skip, w in reversed(skips):
        n = name("up")
        wt = rng.normal(0, math.sqrt(2.0 / (cin * 8)), (cin, w, 2, 2, 2)).astype(np.float32)
        inits.extend([numpy_helper.from_array(wt, n + "_w"),
                      numpy_helper.from_array(np.zeros(w, np.float32), n + "_b")])
        nodes.append(helper.make_node("ConvTranspose", [x, n + "_w", n + "_b"], [n], name=n,
                                      kernel_shape=[2, 2, 2], strides=[2, 2, 2]))
        c = name("cat")
        nodes.append(helper.make_node("Concat", [skip, n], [c], name=c, axis=1))
        x = block(c, 2 * w, w)
        cin = w
    n = name("head")
    node, i = conv(n, x, rng.normal(0, 0.1, (3, cin, 1, 1, 1)), np.zeros(3), n + "_o", [0] * 6)
    nodes.append(node)
    inits.extend(i)
    nodes.append(helper.make_node("Softmax", [n + "_o"], ["probabilities"], name="softmax", axis=1))
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, patch, patch, patch])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3, patch, patch, patch])
    save(nodes, inits, inp, out, path)
    weights = sum(int(np.prod(t.dims)) for t in inits) * 4
    print(json.dumps({"ok": True, "file": path, "weights_mb": round(weights / 2**20, 1)}))


def threshold2(path):
    """Two channels: tumour where (x0 - 0.5) + (x1 - 0.5) > 0, i.e. bright in both series."""
    from onnx import helper, TensorProto
    p = 24
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, p, p, p])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, p, p, p])
    w = np.array([[0.0, 0.0], [20.0, 20.0]]).reshape(2, 2, 1, 1, 1)
    n1, i1 = conv("c", "x", w, np.array([0.0, -20.0]), "logits", [0] * 6)
    sm = helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1)
    save([n1, sm], i1, inp, out, path)


def models(outdir):
    os.makedirs(outdir, exist_ok=True)
    net2ch(os.path.join(outdir, "net2ch.onnx"))
    net2ch(os.path.join(outdir, "unsupported.onnx"), unsupported=True)
    threshold(os.path.join(outdir, "threshold.onnx"))
    threshold2(os.path.join(outdir, "threshold2.onnx"))
    import onnx
    for f in ("net2ch.onnx", "threshold.onnx"):
        onnx.checker.check_model(onnx.load(os.path.join(outdir, f)))
    print(json.dumps({"ok": True, "dir": outdir}))


def mr(outdir, truth_path, seed, companion=None):
    """`companion`: also write a FLAIR-like series of the same study (other spacing, extent and
    contrast, same frame of reference) into this folder."""
    from pydicom.uid import generate_uid
    rng = np.random.default_rng(seed)
    rows, cols, slices = 80, 72, 36
    ps, st = 1.0, 2.0
    origin = np.array([-36.0, -40.0, -30.0])
    centre = np.array([4.0 + rng.uniform(-3, 3), -2.0 + rng.uniform(-3, 3), 6.0 + rng.uniform(-4, 4)])
    radius = 11.0
    study, frame = generate_uid(), generate_uid()
    series = write_mr(outdir, rng, study, frame, centre, radius, dict(
        rows=rows, cols=cols, slices=slices, ps=ps, st=st, origin=origin, tissue=300.0, tumour=900.0,
        description="T1 post-contrast", number=3))
    out = {"centre_lps": centre.tolist(), "radius_mm": radius, "series_uid": series, "study_uid": study}
    if companion:
        out["companion_series_uid"] = write_mr(companion, rng, study, frame, centre, radius, dict(
            rows=64, cols=60, slices=26, ps=1.25, st=3.0, origin=np.array([-37.0, -41.0, -33.0]),
            tissue=350.0, tumour=700.0, description="FLAIR axial", number=4))
    with open(truth_path, "w") as f:
        json.dump(out, f)
    print(json.dumps({"ok": True, "slices": slices}))


def write_mr(outdir, rng, study, frame, centre, radius, g):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    rows, cols, slices, ps, st, origin = g["rows"], g["cols"], g["slices"], g["ps"], g["st"], g["origin"]
    series = generate_uid()
    os.makedirs(outdir, exist_ok=True)
    jj, ii = np.mgrid[0:rows, 0:cols]
    for k in range(slices):
        z = origin[2] + k * st
        x = origin[0] + ii * ps
        y = origin[1] + jj * ps
        # supersampled partial volume for the sphere and the head
        head = ((x / 34.0) ** 2 + (y / 38.0) ** 2 + (z / 40.0) ** 2) <= 1.0
        img = np.where(head, g["tissue"], 0.0)
        frac = np.zeros((rows, cols))
        for dz in (-0.5, 0.0, 0.5):
            for dy in (-0.25, 0.25):
                for dx in (-0.25, 0.25):
                    d2 = (x + dx - centre[0]) ** 2 + (y + dy - centre[1]) ** 2 + (z + dz * st / 2 - centre[2]) ** 2
                    frac += d2 <= radius ** 2
        frac /= 12.0
        img = img * (1 - frac) + g["tumour"] * frac
        img = img + np.where(head, rng.normal(0, 20, img.shape), 0.0)
        px = np.clip(np.rint(img), 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "MR"
        ds.PatientName, ds.PatientID = "MR^Phantom", "MRPH1"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261202", "101010", "1", ""
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber, ds.InstanceNumber = g["number"], k + 1
        ds.SeriesDescription = g["description"]
        ds.Manufacturer = "segnode-tests"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 3.0, 8.0, 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [ps, ps]
        ds.SliceThickness = st
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = px.tobytes()
        ds.save_as(os.path.join(outdir, f"mr{k:03d}.dcm"), enforce_file_format=True)
    return series


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("models")
    m.add_argument("outdir")
    u = sub.add_parser("unet")
    u.add_argument("file")
    u.add_argument("--base", type=int, default=16)
    u.add_argument("--patch", type=int, default=128)
    r = sub.add_parser("mr")
    r.add_argument("outdir")
    r.add_argument("truth")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--companion", help="also write a FLAIR series of the same study here")
    a = ap.parse_args()
    if a.cmd == "models":
        models(a.outdir)
    elif a.cmd == "unet":
        unet(a.file, a.base, a.patch)
    else:
        mr(a.outdir, a.truth, a.seed, a.companion)


if __name__ == "__main__":
    sys.exit(main())
