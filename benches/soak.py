#!/usr/bin/env python3
"""Soak: one segnode for a set time under mixed traffic, sampling what grows when something leaks.

usage: .venv/bin/python benches/soak.py [--minutes 20] [--out DIR] [--bin target/release/segnode]
                                        [--phantom target/release/segnode-phantom] [--matrix 256]
                                        [--pause 15]

What runs (everything on 127.0.0.1, free ports, cleaned up at the end):
- segnode serve: the lung rule to a DCMTK storescp "PACS" (SEG and SR report), retention on a short
  window (keep_hours = 0.01: a finished series leaves the disk after 36 s), the console on.
- 4 senders, each in a loop until the time is up, `--pause` seconds between two sends (default 15: a
  busy site, not an overload the 2-core machine cannot drain):
  1. chest CT of 50–600 slices (a random pick of 50, 150, 300, 600) by storescu, new UIDs every time
     (dcmodify -gst -gse -gin on a copy), 2. the same by pynetdicom, 3. an Enhanced CT multi-frame
  object plus a dose SR and a key object (dcmsend), 4. a sender that is killed mid-series (an aborted
  association: its series must still complete on evidence, nothing acknowledged lost).
- The PACS goes down for a minute at a third of the run and comes back.
- Every 10 s: segnode's RSS (MB) and open file descriptors, the store and outbox size (MB), jobs and
  deliveries waiting, series by state. At the end: release → result latency per delivered series (last
  instance received → first delivery acknowledged), its percentiles, and the samples as CSV.
Prints a JSON summary on the last line; writes samples.csv and summary.json into --out.
"""
import argparse
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=30):
    end = time.time() + limit
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def du_mb(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total / 1048576


def rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Run:
    def __init__(self, a):
        self.a = a
        self.dir = Path(a.out or tempfile.mkdtemp(prefix="segnode-soak-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stop = threading.Event()
        self.sent = {"series": 0, "instances": 0, "failed": 0, "aborted": 0}
        self.lock = threading.Lock()

    def sh(self, *cmd, **kw):
        return subprocess.run(cmd, capture_output=True, text=True, **kw)

    def segnode(self, *args):
        r = self.sh(self.a.bin, "--config", str(self.config), *args, env=self.env, cwd=self.dir)
        return r

    def prepare(self):
        pool = self.dir / "pool"
        self.pool = {}
        for n in (50, 150, 300, 600):
            d = pool / f"ct{n}"
            if not d.exists():
                self.sh(self.a.phantom, "--out", str(d), "--truth", str(pool / f"ct{n}.truth"),
                        "--slices", str(n), "--matrix", str(self.a.matrix), "--seed", str(n), check=True)
            self.pool[n] = sorted(d.glob("*"))
        mf = pool / "mf"
        if not mf.exists():
            self.sh(self.a.phantom, "--out", str(mf), "--truth", str(pool / "mf.truth"), "--slices", "120",
                    "--matrix", str(self.a.matrix), "--multiframe", "enhanced-ct", "--seed", "7", check=True)
        self.pool["mf"] = sorted(mf.glob("*"))
        other = pool / "other"
        if not other.exists():
            self.sh(sys.executable, str(ROOT / "tests/py/make_nonimage.py"), str(self.pool[50][0]), str(other),
                    check=True)
        self.pool["other"] = [other / "dose_sr.dcm", other / "ko.dcm"]

    def fresh_copy(self, files, tag):
        """A copy of `files` under new Study / Series / SOP Instance UIDs."""
        d = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=self.dir / "tmp"))
        out = []
        for f in files:
            t = d / f.name
            shutil.copyfile(f, t)
            out.append(t)
        # one Study and Series UID for the whole copy, a new SOP Instance UID per file
        r = self.sh("dcmodify", "-nb", "-gin", "-m", f"(0020,000d)={self.uid()}", "-m",
                    f"(0020,000e)={self.uid()}", *map(str, out))
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return d, out

    def uid(self):
        return "2.25." + str(random.getrandbits(120))

    def start(self):
        self.port, self.http, self.pacs_port = free_port(), free_port(), free_port()
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.config = self.dir / "segnode.toml"
        base = (ROOT / "config/segnode.toml").read_text()
        b, e = "# --- default rules (begin) ---", "# --- default rules (end) ---"
        if b in base and e in base:
            base = base[: base.index(b)] + base[base.index(e) + len(e):]
        self.config.write_text(
            base
            + f"""
[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {self.pacs_port}
results = ["seg", "sr"]
[[rules]]
name = "chest"
pipelines = ["lung"]
destinations = ["pacs"]
[rules.match]
modality = ["CT"]
min_slices = 40
"""
        )
        self.env = dict(os.environ)
        self.env.update({
            "SEGNODE_DICOM__PORT": str(self.port),
            "SEGNODE_HTTP__PORT": str(self.http),
            "SEGNODE_STORAGE__DIR": str(self.dir / "store"),
            "SEGNODE_DATABASE__URL": f"sqlite://{self.dir / 'segnode.db'}",
            "SEGNODE_DISPATCH__OUTBOX_DIR": str(self.dir / "outbox"),
            "SEGNODE_DISPATCH__KEEP_SENT_H": "0.01",
            "SEGNODE_DISPATCH__RETRY_BASE_S": "2",
            "SEGNODE_DISPATCH__RETRY_MAX_S": "15",
            "SEGNODE_STORAGE__KEEP_HOURS": "0.01",
            "SEGNODE_STORAGE__PURGE_INTERVAL_S": "10",
            "SEGNODE_STORAGE__PURGE_ABOVE_PERCENT": "0",
            "SEGNODE_HTTP__ADMIN_TOKEN_FILE": str(self.dir / "admin-token"),
            "SEGNODE_AUDIT__PATH": str(self.dir / "audit.jsonl"),
        })
        self.log = open(self.dir / "segnode.log", "w")
        self.node = subprocess.Popen([self.a.bin, "--config", str(self.config), "serve"], env=self.env,
                                     cwd=self.dir, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port)
        self.start_pacs()

    def start_pacs(self):
        (self.dir / "pacs").mkdir(exist_ok=True)
        self.pacs = subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(self.dir / "pacs"),
                                      "--ignore", str(self.pacs_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.pacs_port)

    def count(self, n_instances, ok):
        with self.lock:
            if ok:
                self.sent["series"] += 1
                self.sent["instances"] += n_instances
            else:
                self.sent["failed"] += 1

    def sender(self, kind):
        while not self.stop.is_set():
            try:
                if kind in ("storescu", "pynetdicom"):
                    n = random.choice([50, 150, 300, 600])
                    d, files = self.fresh_copy(self.pool[n], kind)
                    if kind == "storescu":
                        r = self.sh("storescu", "-aet", "STORESCU", "-aec", "SEGNODE", "127.0.0.1",
                                    str(self.port), *map(str, files))
                    else:
                        r = self.sh(sys.executable, str(ROOT / "tests/py/dicom_peer.py"), "send",
                                    str(self.port), *map(str, files), "--aet", "PYNETDICOM")
                    self.count(len(files), r.returncode == 0)
                elif kind == "mixed":
                    d, files = self.fresh_copy(self.pool["mf"] + self.pool["other"], kind)
                    r = self.sh("dcmsend", "-aet", "DCMSEND", "-aec", "SEGNODE", "--decompress-never",
                                "127.0.0.1", str(self.port), *map(str, files))
                    self.count(len(files), r.returncode == 0)
                else:  # aborting
                    d, files = self.fresh_copy(self.pool[300], kind)
                    p = subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", "SEGNODE", "127.0.0.1",
                                          str(self.port), *map(str, files)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(random.uniform(0.5, 2.0))
                    p.kill()
                    p.wait()
                    with self.lock:
                        self.sent["aborted"] += 1
                    time.sleep(5)
                shutil.rmtree(d, ignore_errors=True)
                self.stop.wait(self.a.pause)
            except Exception as e:  # a sender error is counted, not fatal
                print(f"sender {kind}: {e}", file=sys.stderr)
                with self.lock:
                    self.sent["failed"] += 1
                time.sleep(2)

    def json_of(self, *args):
        r = self.segnode(*args)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return []

    def sample(self, t0):
        jobs = self.json_of("jobs", "list", "--json")
        outbox = self.json_of("outbox", "list", "--json")
        series = self.json_of("series", "list", "--json")
        states = {}
        for s in series:
            states[s["state"]] = states.get(s["state"], 0) + 1
        return {
            "t_s": round(time.time() - t0),
            "rss_mb": round(rss_mb(self.node.pid) or 0, 1),
            "fds": fds(self.node.pid),
            "store_mb": round(du_mb(self.dir / "store"), 1),
            "outbox_mb": round(du_mb(self.dir / "outbox"), 1),
            "jobs_waiting": sum(1 for j in jobs if j["state"] in ("QUEUED", "RUNNING", "FAILED")),
            "deliveries_waiting": sum(1 for d in outbox if d["state"] in ("PENDING", "SENDING")),
            "series_receiving": states.get("RECEIVING", 0),
            "series_complete": states.get("COMPLETE", 0),
            "series_purged": states.get("PURGED", 0),
            "deliveries_sent": sum(1 for d in outbox if d["state"] == "SENT"),
            "deliveries_dead": sum(1 for d in outbox if d["state"] == "DEAD"),
        }

    def latencies(self):
        series = {s["series_uid"]: s for s in self.json_of("series", "list", "--json")}
        first_sent = {}
        for d in self.json_of("outbox", "list", "--json"):
            if d.get("sent_ms"):
                u = d["series_uid"]
                first_sent[u] = min(first_sent.get(u, d["sent_ms"]), d["sent_ms"])
        out = []
        for u, sent in first_sent.items():
            s = series.get(u)
            if s and s.get("last_received_ms"):
                out.append((sent - s["last_received_ms"]) / 1000)
        return sorted(out)

    def run(self):
        self.prepare()
        self.start()
        t0 = time.time()
        end = t0 + self.a.minutes * 60
        threads = [threading.Thread(target=self.sender, args=(k,), daemon=True)
                   for k in ("storescu", "pynetdicom", "mixed", "aborting")]
        for t in threads:
            t.start()
        samples = []
        down_at, up_at = t0 + (end - t0) / 3, t0 + (end - t0) / 3 + 60
        pacs_down = False
        while time.time() < end:
            if not pacs_down and time.time() >= down_at and time.time() < up_at:
                self.pacs.kill()
                self.pacs.wait()
                pacs_down = True
            if pacs_down and time.time() >= up_at:
                self.start_pacs()
                pacs_down = False
            s = self.sample(t0)
            samples.append(s)
            print(json.dumps(s), flush=True)
            time.sleep(max(0.0, 10 - (time.time() - t0 - s["t_s"])))
        self.stop.set()
        for t in threads:
            t.join(timeout=120)
        if pacs_down:
            self.start_pacs()
        # let the last results go out
        settle_end = time.time() + 120
        while time.time() < settle_end:
            s = self.sample(t0)
            if s["jobs_waiting"] == 0 and s["deliveries_waiting"] == 0 and s["series_receiving"] == 0:
                break
            time.sleep(5)
        final = self.sample(t0)
        samples.append(final)
        lat = self.latencies()
        pct = lambda p: round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 2) if lat else None
        with open(self.dir / "samples.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(samples[0].keys()))
            w.writeheader()
            w.writerows(samples)
        first = samples[min(len(samples) - 1, 6)]  # after the first minute (warm)
        summary = {
            "minutes": self.a.minutes,
            "sent": self.sent,
            "rss_mb": {"after_1_min": first["rss_mb"], "max": max(s["rss_mb"] for s in samples),
                       "end": final["rss_mb"]},
            "fds": {"after_1_min": first["fds"], "max": max(s["fds"] or 0 for s in samples), "end": final["fds"]},
            "store_mb_max": max(s["store_mb"] for s in samples),
            "store_mb_end": final["store_mb"],
            "deliveries": {"sent": final["deliveries_sent"], "dead": final["deliveries_dead"],
                           "waiting_end": final["deliveries_waiting"]},
            "series": {"complete": final["series_complete"], "purged": final["series_purged"],
                       "receiving_end": final["series_receiving"]},
            "latency_s": {"n": len(lat), "p50": pct(50), "p90": pct(90), "p99": pct(99),
                          "max": lat[-1] if lat else None},
            "dir": str(self.dir),
        }
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary))

    def close(self):
        for p in (getattr(self, "node", None), getattr(self, "pacs", None)):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--out")
    ap.add_argument("--bin", default=str(ROOT / "target/release/segnode"))
    ap.add_argument("--phantom", default=str(ROOT / "target/release/segnode-phantom"))
    ap.add_argument("--matrix", type=int, default=256)
    ap.add_argument("--pause", type=float, default=15.0)
    a = ap.parse_args()
    r = Run(a)
    try:
        r.run()
    finally:
        r.close()


if __name__ == "__main__":
    main()
