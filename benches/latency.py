#!/usr/bin/env python3
"""End-to-end latency benchmark (issue 16): a 512 x 512 chest CT phantom (>= 130 slices) is sent by DCMTK
storescu in one association to segnode, which has a lung rule and a real Orthanc as destination; the clock
runs from the end of the sending association (storescu exits right after the release) until Orthanc
reports the SEG series (its REST statistics, polled every 10 ms).

For each index backend (SQLite file, PostgreSQL server started here) and each completion mode
(`fast`: completion at release, the default; `settle`: completion.fast_release = false, the 2 s settle
wait of before) it prints per run and as medians: release -> COMPLETE (segnode's own record),
release -> SEG in Orthanc, segment time of the job, and serve's peak RSS. A fresh segnode, Orthanc and
index per run; each run sends a different phantom (its own UIDs).

usage: benches/latency.py [--runs 5] [--slices 133] [--db sqlite,postgres] [--modes fast,settle]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import ROOT, SEGNODE, free_port, proc_stats, stop, wait_port  # noqa: E402

PHANTOM = os.path.join(ROOT, "target", "release", "segnode-phantom")
PG_BIN = None
for v in ("17", "16", "15", "14", "13"):
    if os.path.exists(f"/usr/lib/postgresql/{v}/bin/postgres"):
        PG_BIN = f"/usr/lib/postgresql/{v}/bin"
        break


def as_postgres_user(cmd):
    """PostgreSQL refuses to run as root: run its programs as the `postgres` system user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class Postgres:
    """A throw-away PostgreSQL cluster on a free 127.0.0.1 port (fsync on: a fair durability cost)."""

    def __init__(self, base):
        if PG_BIN is None:
            raise RuntimeError("PostgreSQL server binaries not found (scripts/install-test-deps)")
        self.dir = os.path.join(base, "pg")
        self.port = free_port()
        # a cluster left by an interrupted run in a reused work dir is only in the way
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(base, 0o755)
        subprocess.run(as_postgres_user([f"{PG_BIN}/initdb", "-D", f"{self.dir}/data", "-U", "segnode",
                                         "-A", "trust", "-E", "UTF8", "--locale=C"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(as_postgres_user(
            [f"{PG_BIN}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        self.n = 0

    def database(self):
        self.n += 1
        name = f"bench{self.n}"
        for _ in range(50):
            r = subprocess.run(as_postgres_user([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p",
                                                 str(self.port), "-U", "segnode", name]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if r.returncode == 0:
                return f"postgres://segnode@127.0.0.1:{self.port}/{name}"
            time.sleep(0.2)
        raise RuntimeError(f"createdb failed: {r.stderr.decode(errors='replace')}")

    def stop(self):
        stop(self.proc, signal.SIGINT)


class Orthanc:
    def __init__(self, work):
        self.dicom = free_port()
        self.http = free_port()
        cfg = {
            "Name": "latency", "StorageDirectory": os.path.join(work, "orthanc-store"),
            "IndexDirectory": os.path.join(work, "orthanc-index"), "DicomAet": "ORTHANC",
            "DicomPort": self.dicom, "HttpPort": self.http, "HttpServerEnabled": True,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True, "StorageCompression": False, "Plugins": [],
        }
        path = os.path.join(work, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.proc = subprocess.Popen(["Orthanc", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=work)
        wait_port(self.dicom, self.proc)
        wait_port(self.http, self.proc)

    def series_count(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/statistics", timeout=5) as r:
            return json.load(r)["CountSeries"]

    def stop(self):
        stop(self.proc)


def node_config(work, orthanc_port):
    """The repository config without its default rules, plus one lung rule sending SEG to Orthanc."""
    with open(os.path.join(ROOT, "config", "segnode.toml")) as f:
        base = f.read()
    b, e = "# --- default rules (begin) ---", "# --- default rules (end) ---"
    base = base[:base.index(b)] + base[base.index(e) + len(e):]
    base += f"""
[[destinations]]
name = "orthanc"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {orthanc_port}

[[rules]]
name = "lungs"
pipelines = ["lung"]
destinations = ["orthanc"]
[rules.match]
modality = ["CT"]
"""
    path = os.path.join(work, "segnode.toml")
    with open(path, "w") as f:
        f.write(base)
    return path


def one_run(files, work, db_url, mode):
    orthanc = Orthanc(work)
    port = free_port()
    env = dict(os.environ, SEGNODE_DICOM__PORT=str(port), SEGNODE_HTTP__PORT=str(free_port()),
               SEGNODE_STORAGE__DIR=os.path.join(work, "store"), SEGNODE_STORAGE__MIN_FREE_MB="0",
               SEGNODE_STORAGE__PURGE_ABOVE_PERCENT="0",
               SEGNODE_DISPATCH__OUTBOX_DIR=os.path.join(work, "outbox"),
               SEGNODE_HTTP__ADMIN_TOKEN_FILE=os.path.join(work, "admin-token"),
               SEGNODE_DATABASE__URL=db_url, SEGNODE_LOG__LEVEL="warn",
               SEGNODE_COMPLETION__FAST_RELEASE="true" if mode == "fast" else "false")
    config = node_config(work, orthanc.dicom)
    log = open(os.path.join(work, "segnode.log"), "w")
    node = subprocess.Popen([SEGNODE, "--config", config, "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=work)
    try:
        wait_port(port, node)
        before = orthanc.series_count()
        send_env = dict(os.environ, TCP_NODELAY="1")
        subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "SEGNODE", "127.0.0.1", str(port)] + files,
                       env=send_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        released = time.perf_counter()
        released_ms = time.time() * 1000.0
        while orthanc.series_count() == before:
            if time.perf_counter() - released > 120:
                raise RuntimeError(f"no SEG in Orthanc after 120 s; see {work}/segnode.log")
            time.sleep(0.01)
        seg_s = time.perf_counter() - released
        rss, _ = proc_stats(node.pid)
        listed = subprocess.run([SEGNODE, "--config", config, "series", "list", "--json"], env=env,
                                check=True, capture_output=True).stdout
        series = json.loads(listed)[0]
        complete_s = (series["completed_ms"] - released_ms) / 1000.0
        jobs = json.loads(subprocess.run([SEGNODE, "--config", config, "jobs", "list", "--json"], env=env,
                                         check=True, capture_output=True).stdout)
        segment_ms = load_ms = ahead = None
        for j in jobs:
            res = j.get("result") or {}
            if isinstance(res, str):
                try:
                    res = json.loads(res)
                except ValueError:
                    res = {}
            segment_ms = res.get("segment_ms", segment_ms)
            load_ms = res.get("load_ms", load_ms)
            ahead = res.get("slices_read_ahead", ahead)
        return complete_s, seg_s, rss, segment_ms, load_ms, ahead
    finally:
        stop(node)
        orthanc.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slices", type=int, default=133)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--modes", default="fast,settle")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    base = a.workdir or tempfile.mkdtemp(prefix="segnode-latency-")
    os.chmod(base, 0o755)
    phantoms = []
    for run in range(a.runs):
        d = os.path.join(base, f"phantom{run}")
        if not os.path.isdir(d):
            subprocess.run([PHANTOM, "--kind", "chest", "--matrix", "512", "--slices", str(a.slices),
                            "--seed", str(100 + run), "--out", d], check=True, stdout=subprocess.DEVNULL)
        phantoms.append(sorted(os.path.join(d, f) for f in os.listdir(d)))
    print(f"# {a.slices} slices 512x512 per series, {a.runs} runs, {os.cpu_count()} cores, work dir {base}")
    pg = Postgres(base) if "postgres" in a.db.split(",") else None
    rows = []
    try:
        for db in a.db.split(","):
            for mode in a.modes.split(","):
                res = []
                for run in range(a.runs):
                    work = os.path.join(base, f"{db}-{mode}-{run}")
                    shutil.rmtree(work, ignore_errors=True)
                    os.makedirs(work)
                    os.chmod(work, 0o755)
                    url = pg.database() if db == "postgres" else f"sqlite://{work}/index.db"
                    r = one_run(phantoms[run], work, url, mode)
                    res.append(r)
                    print(f"{db:8} {mode:6} run {run}: COMPLETE {r[0]*1000:6.0f} ms  SEG in Orthanc "
                          f"{r[1]:5.2f} s  load {r[4]} ms ({r[5]} slices read ahead)  segment {r[3]} ms  "
                          f"peak RSS {r[2]:.0f} MB", flush=True)
                    shutil.rmtree(work, ignore_errors=True)
                med = lambda i: statistics.median(x[i] for x in res)  # noqa: E731
                seg_ms = [x[3] for x in res if x[3] is not None]
                load_ms = [x[4] for x in res if x[4] is not None]
                rows.append((db, mode, med(0), med(1), statistics.median(seg_ms) if seg_ms else None, med(2),
                             statistics.median(load_ms) if load_ms else None))
    finally:
        if pg:
            pg.stop()
    print()
    print(f"| index | completion | release -> COMPLETE | release -> SEG in Orthanc (median of {a.runs}) "
          "| load ms | segment ms | serve peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]*1000:.0f} ms | {r[3]:.2f} s | {r[6]} | {r[4]} | {r[5]:.0f} |")
    if a.workdir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
