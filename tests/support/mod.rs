//! Helpers shared by the integration tests: where the repository, the shared data and the test Python are,
//! free ports on 127.0.0.1, and running external peers (DCMTK, Python scripts) with bounded time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A folder of `../shared/data/` (real CT series, read-only).
pub fn shared_data(name: &str) -> PathBuf {
    let p = repo_root()
        .join("..")
        .join("shared")
        .join("data")
        .join(name);
    assert!(p.is_dir(), "shared data folder {} is missing", p.display());
    p
}

/// The Python interpreter of the test venv (`SEGNODE_TEST_PYTHON`, else `.venv/bin/python`), which has
/// pynetdicom, pydicom, numpy, highdicom (scripts/install-test-deps makes it).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SEGNODE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv").join("bin").join("python");
    assert!(
        venv.exists(),
        "no test venv at {}: run scripts/install-test-deps",
        venv.display()
    );
    venv
}

/// A script under tests/py/.
pub fn py_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("py").join(name)
}

/// A TCP port on 127.0.0.1 that is free right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Run a command to completion with a time limit; kills it and panics when the limit passes.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("wait_with_output"),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait_with_output");
                panic!(
                    "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Run a Python script from tests/py with the test venv; returns its output (not checked).
pub fn run_py(script: &str, args: &[&str], limit: Duration) -> Output {
    run_with_timeout(
        Command::new(python()).arg(py_script(script)).args(args),
        limit,
    )
}

/// Every regular file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
