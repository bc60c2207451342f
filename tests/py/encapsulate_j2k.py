"""Re-encode a native multi-frame object as JPEG 2000 Lossless, one codestream per frame.

usage: encapsulate_j2k.py IN OUT

DCMTK has no JPEG 2000 encoder; Pillow (with OpenJPEG) encodes 16-bit unsigned frames losslessly. Signed
pixels are shifted to unsigned and the shift is taken out of the rescale intercept (shared Pixel Value
Transformation, else the top-level RescaleIntercept), so the HU values are unchanged. Prints one JSON line.
"""
import io
import json
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless


def main():
    src, dst = sys.argv[1:3]
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    shift = 0
    if ds.PixelRepresentation == 1:
        shift = int(-frames.min()) if frames.min() < 0 else 0
        frames = (frames.astype(np.int32) + shift).astype(np.uint16)
        ds.PixelRepresentation = 0
        pvt = None
        if "SharedFunctionalGroupsSequence" in ds:
            g = ds.SharedFunctionalGroupsSequence[0]
            if "PixelValueTransformationSequence" in g:
                pvt = g.PixelValueTransformationSequence[0]
        target = pvt if pvt is not None else ds
        target.RescaleIntercept = float(target.RescaleIntercept) - shift
    ds.BitsStored = 16
    ds.HighBit = 15
    encoded = []
    for f in frames:
        im = Image.frombytes("I;16", (ds.Columns, ds.Rows), f.astype("<u2").tobytes())
        buf = io.BytesIO()
        im.save(buf, format="JPEG2000", no_jp2=True, irreversible=False)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(dst, enforce_file_format=True)
    print(json.dumps({"frames": len(encoded), "shift": shift, "bytes": sum(map(len, encoded))}))


if __name__ == "__main__":
    main()
