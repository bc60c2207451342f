#!/usr/bin/env python3
"""pynetdicom as a test peer of segnode.

  dicom_peer.py echo  PORT [--aet AET] [--aec AEC]
      C-ECHO; prints {"status": N} (or {"error": ...}), exit 0 when the echo succeeded.
  dicom_peer.py send  PORT FILE... [--aet AET] [--aec AEC] [--delay SECONDS]
      C-STORE each file in its own order, reading SOP class / instance from the file meta and sending
      the data set bytes exactly as in the file (pynetdicom's chunked mode). Prints one JSON line per
      file as soon as its response arrives: {"file": ..., "status": N}. Stops at the first network error
      ({"file": ..., "error": ...}). --delay waits between files (a slow sender).
  dicom_peer.py hold  PORT SECONDS [--aet AET] [--aec AEC]
      Associate, print "ready", keep the association open SECONDS, release.
"""
import argparse
import json
import sys
import time

from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

_config.STORE_SEND_CHUNKED_DATASET = True


def out(obj):
    print(json.dumps(obj), flush=True)


def associate(args, contexts):
    ae = AE(ae_title=args.aet)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    for abstract, ts in contexts:
        ae.add_requested_context(abstract, ts)
    return ae.associate("127.0.0.1", args.port, ae_title=args.aec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["echo", "send", "hold"])
    ap.add_argument("port", type=int)
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--aet", default="PYNETDICOM")
    ap.add_argument("--aec", default="SEGNODE")
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()

    if args.mode in ("echo", "hold"):
        assoc = associate(args, [(Verification, [ImplicitVRLittleEndian])])
        if not assoc.is_established:
            out({"error": "association not established", "rejected": assoc.is_rejected})
            return 1
        if args.mode == "hold":
            print("ready", flush=True)
            time.sleep(float(args.rest[0]))
            assoc.release()
            return 0
        st = assoc.send_c_echo()
        assoc.release()
        code = getattr(st, "Status", None)
        out({"status": code})
        return 0 if code == 0 else 1

    from pydicom.filereader import read_file_meta_info

    files = args.rest
    contexts = {}
    for f in files:
        m = read_file_meta_info(f)
        contexts.setdefault(str(m.MediaStorageSOPClassUID), set()).add(str(m.TransferSyntaxUID))
    # one context per (class, syntax): the file is sent exactly in its own transfer syntax
    reqs = [(abstract, [ts]) for abstract, tss in contexts.items() for ts in sorted(tss)]
    assoc = associate(args, reqs)
    if not assoc.is_established:
        out({"error": "association not established", "rejected": assoc.is_rejected})
        return 1
    failed = False
    for i, f in enumerate(files):
        if args.delay and i:
            time.sleep(args.delay)
        try:
            st = assoc.send_c_store(f)
        except Exception as e:  # noqa: BLE001 - report and stop
            out({"file": f, "error": str(e)})
            failed = True
            break
        code = getattr(st, "Status", None)
        if code is None:
            out({"file": f, "error": "no response (association aborted?)"})
            failed = True
            break
        out({"file": f, "status": code, "comment": str(getattr(st, "ErrorComment", ""))})
    if assoc.is_established:
        assoc.release()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
