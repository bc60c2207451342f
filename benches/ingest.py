#!/usr/bin/env python3
"""Ingest benchmark: DCMTK storescu sends one generated CT series to each receiver, in the same run and
to the same disk, with 1 and 4 parallel associations, several runs each (fresh receiver and empty storage
per run). Prints medians: instances/s, MB/s, receiver peak RSS and receiver CPU seconds.

Receivers: segnode (the ingest journal: one shared flush before every success, files and index rows
right after; SQLite index), segnode-pg (the same with a PostgreSQL index, a throw-away server with fsync
on), segnode-direct (storage.journal = false: file fdatasync + rename + directory fsync + index row
before every success), DCMTK storescp stock, storescp tuned (TCP_NODELAY=1, +B,
-pdu 131072), storescp-fork (tuned, one process per association: the peer for parallel associations), Orthanc (Debian package, temporary config, TCP_NODELAY=1), storescp --ignore (receives and
discards: the sender's ceiling). The sender runs with TCP_NODELAY=1 for every receiver.

usage: benches/ingest.py [--slices 300] [--size 512] [--runs 3] [--workdir DIR] [--only NAME,...] [--thirds]
       [--settle 3] [--warm SECONDS]
(--size 64 --slices 1000: small objects, where the fixed cost per instance dominates;
 --thirds --size 64 --slices 3000: each segnode receiver also gets the series as three consecutive
 associations of a third each, and the rate of the last third against the first is printed: the cost
 of an instance must not grow with the series)
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGNODE = os.environ.get("SEGNODE_BIN", os.path.join(ROOT, "target", "release", "segnode"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=30.0):
    start = time.time()
    while time.time() - start < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {limit}s")


def proc_stats(pid):
    """(peak RSS MB, CPU seconds) of a running process; the CPU includes its reaped children (storescp
    --fork serves each association in a child)."""
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks
    return hwm, cpu


def stop(proc, sig=signal.SIGTERM, limit=30):
    """Ask a process to stop with `sig`; kill it if it has not exited within `limit` seconds."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()


_PG = []


def postgres(work):
    """The bench's PostgreSQL server (started on first use, in the bench's base folder; fsync on), for the
    `segnode-pg` receiver: segnode with the journal, indexing into PostgreSQL instead of SQLite."""
    if not _PG:
        from latency import Postgres  # latency.py imports this module: import it late
        _PG.append(Postgres(os.path.dirname(work)))
    return _PG[0]


def start_receiver(name, work, port, extra_env=None):
    """Start a receiver storing under `work`; returns (Popen, called AE)."""
    env = dict(os.environ)
    env.update(extra_env or {})
    out = open(os.path.join(work, "receiver.log"), "w")
    if name in ("segnode", "segnode-direct", "segnode-pg"):
        env.update({
            "SEGNODE_STORAGE__JOURNAL": "false" if name == "segnode-direct" else "true",
            "SEGNODE_DICOM__PORT": str(port),
            "SEGNODE_DICOM__ACCEPT_ANY": "true",
            "SEGNODE_STORAGE__DIR": os.path.join(work, "store"),
            "SEGNODE_STORAGE__MIN_FREE_MB": "0",
            "SEGNODE_DATABASE__URL": (postgres(work).database() if name == "segnode-pg"
                                      else f"sqlite://{work}/index.db"),
            "SEGNODE_LOG__LEVEL": "warn",
            # no web console: the bench needs none, and a busy port 8080 must not stop the receiver
            "SEGNODE_HTTP__PORT": "0",
        })
        cmd = [SEGNODE, "--config", os.path.join(ROOT, "config", "segnode.toml"), "serve"]
        aec = "SEGNODE"
    elif name.startswith("storescp"):
        os.makedirs(os.path.join(work, "store"))
        cmd = ["storescp", "-aet", "STORESCP", "-od", os.path.join(work, "store")]
        if name in ("storescp-tuned", "storescp-fork"):
            env["TCP_NODELAY"] = "1"
            cmd += ["+B", "-pdu", "131072"]
        if name == "storescp-fork":
            cmd += ["--fork"]
        if name == "storescp-ignore":
            env["TCP_NODELAY"] = "1"
            cmd += ["--ignore", "-pdu", "131072"]
        cmd.append(str(port))
        aec = "STORESCP"
    elif name == "orthanc":
        env["TCP_NODELAY"] = "1"
        cfg = {
            "Name": "bench", "StorageDirectory": os.path.join(work, "store"),
            "IndexDirectory": os.path.join(work, "index"), "DicomAet": "ORTHANC", "DicomPort": port,
            "HttpPort": free_port(), "HttpServerEnabled": True, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "StorageCompression": False, "Plugins": [], "ConcurrentJobs": 2,
        }
        path = os.path.join(work, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        cmd = ["Orthanc", path]
        aec = "ORTHANC"
    else:
        raise ValueError(name)
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    wait_port(port, proc)
    return proc, aec


def send(files, port, aec, parallel):
    env = dict(os.environ, TCP_NODELAY="1")
    groups = [files[i::parallel] for i in range(parallel)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", aec, "127.0.0.1", str(port)] + g,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for g in groups]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    dt = time.perf_counter() - t0
    failed = [e.decode(errors="replace") for p, e in zip(procs, errs) if p.returncode != 0]
    if failed:
        raise RuntimeError("storescu failed: " + failed[0][-500:])
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512, help="rows = columns of each slice")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds between a receiver listening and the send, for every receiver alike: a "
                         "fresh segnode zero-fills its journal ring (64 MB) in the background once, which a "
                         "node that runs for months did long before its first series")
    ap.add_argument("--warm", type=float, default=0.0, metavar="SECONDS",
                    help="every receiver alike first receives another series of the same size (its own UIDs), "
                         "then idles this long (segnode: its job for that series runs and ends) before the "
                         "measured send: a node that has been running, with its memory already in use")
    ap.add_argument("--thirds", action="store_true",
                    help="segnode receivers: also time a series sent as three consecutive thirds")
    ap.add_argument("--only", default="segnode,segnode-direct,storescp-stock,storescp-tuned,storescp-fork,orthanc,storescp-ignore")
    a = ap.parse_args()
    base = a.workdir or tempfile.mkdtemp(prefix="segnode-bench-")
    data = os.path.join(base, "series" if a.size == 512 else f"series-{a.size}")
    if not os.path.isdir(data):
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "py", "gen_ct_series.py"), data,
                        "--slices", str(a.slices), "--size", str(a.size), "--seed", "7"], check=True,
                       stdout=subprocess.DEVNULL)
    files = sorted(os.path.join(data, f) for f in os.listdir(data))
    warm_files = []
    if a.warm > 0:
        warm = data + "-warm"
        if not os.path.isdir(warm):
            subprocess.run([sys.executable, os.path.join(ROOT, "tests", "py", "gen_ct_series.py"), warm,
                            "--slices", str(a.slices), "--size", str(a.size), "--seed", "8"], check=True,
                           stdout=subprocess.DEVNULL)
        warm_files = sorted(os.path.join(warm, f) for f in os.listdir(warm))
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"# {len(files)} instances, {mb:.0f} MB, {os.cpu_count()} cores, work dir {base}"
          + (f", each receiver warmed by another series and {a.warm:.0f} s idle" if warm_files else ""))
    rows = []
    for name in a.only.split(","):
        for parallel in (1, 4):
            res = []
            for run in range(a.runs):
                work = os.path.join(base, f"{name}-{parallel}-{run}")
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                port = free_port()
                proc, aec = start_receiver(name, work, port)
                try:
                    time.sleep(a.settle)
                    if warm_files:
                        send(warm_files, port, aec, parallel)
                        time.sleep(a.warm)
                    _, cpu0 = proc_stats(proc.pid)
                    dt = send(files, port, aec, parallel)
                    rss, cpu1 = proc_stats(proc.pid)
                finally:
                    stop(proc)
                shutil.rmtree(work, ignore_errors=True)
                res.append((dt, rss, cpu1 - cpu0))
            dt = statistics.median(r[0] for r in res)
            rss = statistics.median(r[1] for r in res)
            cpu = statistics.median(r[2] for r in res)
            rows.append((name, parallel, len(files) / dt, mb / dt, rss, cpu, cpu / len(files) * 1e3))
            print(f"{name:16} x{parallel}: {len(files)/dt:7.0f} inst/s  {mb/dt:6.0f} MB/s  "
                  f"peak RSS {rss:6.1f} MB  CPU {cpu:5.2f} s ({cpu/len(files)*1e3:.2f} ms/inst)", flush=True)
    print()
    print("| receiver | assoc | inst/s | MB/s | peak RSS MB | CPU s | CPU ms/inst |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.1f} | {r[5]:.2f} | {r[6]:.2f} |")
    if a.thirds:
        for name in [n for n in a.only.split(",") if n.startswith("segnode")]:
            ratios = []
            for run in range(a.runs):
                work = os.path.join(base, f"{name}-thirds-{run}")
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                port = free_port()
                # one series in three associations: kept open (no completion at a release in between)
                proc, aec = start_receiver(name, work, port, {"SEGNODE_COMPLETION__FAST_RELEASE": "false",
                                                              "SEGNODE_COMPLETION__SETTLE_S": "600"})
                try:
                    n = len(files) // 3
                    times = [send(files[i * n:(i + 1) * n], port, aec, 1) for i in range(3)]
                finally:
                    stop(proc)
                shutil.rmtree(work, ignore_errors=True)
                ratios.append(times[0] / times[2])
                print(f"{name:16} thirds: {' '.join(f'{n / t:.0f}' for t in times)} inst/s", flush=True)
            print(f"{name} rate of the last third / the first: {statistics.median(ratios):.2f}")
    ceiling = {p: r[2] for r in rows if r[0] == "storescp-ignore" for p in [r[1]]}
    seg = {r[1]: r[2] for r in rows if r[0] == "segnode"}
    for p in (1, 4):
        if p in ceiling and p in seg:
            print(f"segnode reaches {100 * seg[p] / ceiling[p]:.0f} % of the sender ceiling with {p} association(s)")
    # the ratios: one association against tuned storescp, four against storescp --fork
    peers = {(r[0], r[1]): r[2] for r in rows}
    for who in ("segnode", "segnode-direct", "segnode-pg"):
        mine = {r[1]: r[2] for r in rows if r[0] == who}
        for p, peer in ((1, "storescp-tuned"), (4, "storescp-tuned"), (4, "storescp-fork")):
            if p in mine and (peer, p) in peers:
                print(f"{who} / {peer} with {p} association(s): {mine[p] / peers[(peer, p)]:.2f}")
    if _PG:
        _PG[0].stop()
    if a.workdir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
