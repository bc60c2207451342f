//! Job queue benchmark: jobs per second claimed and completed by 1, 2 and 4 `segnode worker` processes
//! running the `noop` pipeline, and the delay from a job's creation to its claim by an idle worker —
//! on PostgreSQL (LISTEN / NOTIFY wake-ups, `FOR UPDATE SKIP LOCKED` claims; a real server started
//! like the tests do) and, in the same run, on SQLite (the embedded default, where workers in other
//! processes find new jobs by polling every `workers.poll_ms`).
//!
//!   cargo bench --bench queue [-- --jobs 2000 --workers 1,2,4 --samples 60]
//!
//! Jobs are created through segnode's own queue code (`Queue::create`, and for the throughput run
//! `Queue::create_many`: one transaction and one jobs wake-up, so every worker starts at the commit).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use segnode_db::jobs::{NewJob, Queue};
use segnode_db::{now_ms, Index, JobState};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    jobs: usize,
    workers: Vec<usize>,
    samples: usize,
}

fn args() -> Args {
    let mut a = Args {
        jobs: 2000,
        workers: vec![1, 2, 4],
        samples: 60,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--jobs" => a.jobs = next.parse().expect("--jobs N"),
            "--samples" => a.samples = next.parse().expect("--samples N"),
            "--workers" => {
                a.workers = next
                    .split(',')
                    .map(|n| n.parse().expect("--workers 1,2,4"))
                    .collect()
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

struct Workers {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Workers {
    fn start(url: &str, n: usize) -> Workers {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("segnode.toml");
        std::fs::write(
            &config,
            "[log]\nlevel = \"warn\"\n[[rules]]\nname = \"bench\"\npipelines = [\"noop\"]\ndestinations = []\n",
        )
        .unwrap();
        let children = (0..n)
            .map(|k| {
                Command::new(env!("CARGO_BIN_EXE_segnode"))
                    .args(["--config", &config.display().to_string(), "worker"])
                    .env("SEGNODE_DATABASE__URL", url)
                    .env("SEGNODE_NODE__NAME", format!("bench-worker-{k}"))
                    .env("SEGNODE_STORAGE__DIR", dir.path().join("store"))
                    .env("SEGNODE_DISPATCH__OUTBOX_DIR", dir.path().join("outbox"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start segnode worker")
            })
            .collect();
        Workers {
            children,
            _dir: dir,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait (bounded) until every job whose series starts with `prefix` is DONE.
async fn wait_done(queue: &Queue, prefix: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = queue.count(JobState::Done, prefix).await.unwrap();
        if done >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix}: {done} of {expected} jobs done after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Row_ {
    backend: &'static str,
    workers: usize,
    jobs_per_s: f64,
    median_delay_ms: f64,
    p95_delay_ms: f64,
    share: Vec<usize>,
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64
}

async fn measure(backend: &'static str, url: &str, n: usize, a: &Args) -> Row_ {
    let index = Index::open(url).await.expect("open the database");
    let queue = Queue::new(index.clone());
    let _workers = Workers::start(url, n);
    // warm-up: every worker started, connected and listening
    for i in 0..(4 * n) {
        queue
            .create(&format!("warm.{i}"), 1, "noop", &[], &[])
            .await
            .unwrap();
    }
    wait_done(&queue, "warm.", 4 * n as i64).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // claim delay: one job at a time into idle workers
    for i in 0..a.samples {
        queue
            .create(&format!("delay.{i}"), 1, "noop", &[], &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    wait_done(&queue, "delay.", a.samples as i64).await;
    let mut delays: Vec<i64> = queue
        .list(None)
        .await
        .unwrap()
        .iter()
        .filter(|j| j.series_uid.starts_with("delay."))
        .map(|j| j.started_ms.unwrap_or(j.created_ms) - j.created_ms)
        .collect();
    delays.sort();

    // throughput: a backlog committed at once
    let backlog: Vec<NewJob> = (0..a.jobs)
        .map(|i| NewJob {
            series_uid: format!("tp.{i}"),
            revision: 1,
            pipeline: "noop".into(),
            rules: Vec::new(),
            destinations: Vec::new(),
        })
        .collect();
    queue.create_many(&backlog).await.unwrap();
    let t0 = now_ms();
    wait_done(&queue, "tp.", a.jobs as i64).await;
    let throughput: Vec<_> = queue
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.series_uid.starts_with("tp."))
        .collect();
    let t1: i64 = throughput
        .iter()
        .filter_map(|j| j.finished_ms)
        .max()
        .unwrap_or(t0);
    let results: Vec<String> = throughput.into_iter().filter_map(|j| j.result).collect();
    let mut share = vec![0usize; n];
    for r in results {
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        let w = v["worker"].as_str().unwrap_or("");
        if let Some(k) = w
            .strip_prefix("bench-worker-")
            .and_then(|r| r.split('/').next())
            .and_then(|k| k.parse::<usize>().ok())
        {
            share[k] += 1;
        }
    }
    index.close().await;
    Row_ {
        backend,
        workers: n,
        jobs_per_s: a.jobs as f64 / ((t1 - t0).max(1) as f64 / 1000.0),
        median_delay_ms: percentile(&delays, 0.5),
        p95_delay_ms: percentile(&delays, 0.95),
        share,
    }
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let sqlite_dir = tempfile::tempdir().unwrap();
    for &n in &a.workers {
        let url = support::postgres::new_database();
        eprintln!("postgres, {n} worker(s) …");
        rows.push(rt.block_on(measure("PostgreSQL", &url, n, &a)));
        let url = format!("sqlite://{}/q{n}.db", sqlite_dir.path().display());
        eprintln!("sqlite, {n} worker(s) …");
        rows.push(rt.block_on(measure("SQLite", &url, n, &a)));
    }
    println!(
        "\njob queue, noop pipeline: {} jobs per throughput run, {} claim-delay samples; `segnode worker` processes (workers.poll_ms = 1000)\n",
        a.jobs, a.samples
    );
    println!("| backend | workers | jobs/s | vs 1 worker | median creation→claim ms | p95 ms | jobs per worker |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| b.backend == r.backend && b.workers == 1)
            .map(|b| b.jobs_per_s)
            .unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.0} | {:.2}× | {:.0} | {:.0} | {:?} |",
            r.backend,
            r.workers,
            r.jobs_per_s,
            r.jobs_per_s / base,
            r.median_delay_ms,
            r.p95_delay_ms,
            r.share
        );
    }
}
