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

/// Run the phantom writer's command line (`segnode-phantom ARGS…`, the segnode-phantom crate) in-process;
/// its JSON summary. Panics with the writer's error when it fails.
pub fn phantom_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let mut argv: Vec<std::ffi::OsString> = vec!["segnode-phantom".into()];
    argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
    match segnode_phantom::cli::run_from(argv) {
        Ok(v) => v,
        Err(e) => panic!(
            "segnode-phantom {:?}: {e:#}",
            &args
                .iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>()
        ),
    }
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

/// Poll `f` every 100 ms until it gives a value; panics naming `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET http://127.0.0.1:PORT/PATH` with curl: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-s", "-m", "20", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}")),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A TCP port on 127.0.0.1 that is free right now.
pub fn free_port() -> u16 {
    // The kernel may hand the same ephemeral port to two binds in a row once the first is closed; a
    // process that asks twice (Orthanc's DICOM and HTTP ports) must get two different ones.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Run a command to completion with a time limit; kills it and panics when the limit passes. Output is
/// drained while the command runs, so a chatty command cannot block on a full pipe.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err_t = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                let (o, e) = (
                    out_t.join().unwrap_or_default(),
                    err_t.join().unwrap_or_default(),
                );
                panic!(
                    "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&o),
                    String::from_utf8_lossy(&e)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Run a Python script from tests/py with the test venv; returns its output (not checked).
pub fn run_py(script: &str, args: &[&str], limit: Duration) -> Output {
    run_with_timeout(
        Command::new(python()).arg(py_script(script)).args(args),
        limit,
    )
}

/// `segnode segment --pipeline PIPELINE --input INPUT --output OUTPUT`: whether it succeeded, and the one
/// JSON line it must print (also on failure).
pub fn segment_cli(pipeline: &str, input: &Path, output: &Path) -> (bool, serde_json::Value) {
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_segnode"))
            .args(["segment", "--pipeline", pipeline, "--input"])
            .arg(input)
            .arg("--output")
            .arg(output),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON line expected, got: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        serde_json::from_str(lines[0]).expect("JSON"),
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

/// Run `dciodvfy` on a file; returns the lines that start with `Error` (dicom3tools reports problems on
/// stderr as `Error - ...` / `Warning - ...`).
pub fn dciodvfy_errors(path: &Path) -> Vec<String> {
    let out = run_with_timeout(Command::new("dciodvfy").arg(path), Duration::from_secs(120));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.trim_start().starts_with("Error"))
        .map(str::to_string)
        .collect()
}

/// Build the SEG of `seg` on `volume` (default options), write it as `dir/seg.dcm` and assert that
/// dciodvfy reports no error (`what` names the case in the failure); returns its path.
pub fn write_seg_dciodvfy_clean(
    volume: &segnode_imaging::volume::Volume,
    seg: &segnode_imaging::segment::Segmentation,
    dir: &Path,
    what: &str,
) -> PathBuf {
    use segnode_imaging::result::{ResultOptions, SegObject};
    let obj = SegObject::build(volume, seg, &ResultOptions::default()).expect("build SEG");
    let path = dir.join("seg.dcm");
    obj.write(&path).expect("write SEG");
    let errors = dciodvfy_errors(&path);
    assert!(
        errors.is_empty(),
        "{what} dciodvfy:\n{}",
        dciodvfy_output(&path)
    );
    path
}

/// Full `dciodvfy` output (for failure messages).
pub fn dciodvfy_output(path: &Path) -> String {
    let out = run_with_timeout(Command::new("dciodvfy").arg(path), Duration::from_secs(120));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Check a SEG with `tests/py/check_seg.py` (highdicom read-back bit-exact against `labels`, frames mapped
/// to the right source slices); panics with the checker's report when it finds a problem.
pub fn check_seg_with_highdicom(
    seg: &Path,
    source_dir: &Path,
    labels: &ndarray::Array3<u8>,
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("labels.raw");
    let bytes: Vec<u8> = labels.iter().copied().collect();
    std::fs::write(&raw, bytes).expect("write labels");
    let s = labels.shape();
    let (k, j, i) = (s[0].to_string(), s[1].to_string(), s[2].to_string());
    let out = run_py(
        "check_seg.py",
        &[
            seg.to_str().unwrap(),
            source_dir.to_str().unwrap(),
            raw.to_str().unwrap(),
            &k,
            &j,
            &i,
        ],
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_seg.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("checker prints JSON")
}

pub mod node;
pub mod orthanc;
pub mod postgres;
pub mod storescp;
