//! A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a fresh cluster in a temporary
//! directory on a free 127.0.0.1 port, run as an ordinary user (the `postgres` system user when the
//! tests run as root: PostgreSQL refuses to run as root). One shared server per test binary, started on
//! first use, each test with a database of its own; a test that stops and restarts its server makes a
//! private one ([`PgServer::private`]). The server is started from a thread that waits for it and gets a
//! parent-death signal, so it stops when the test binary exits, however it exits.
//!
//! `SEGNODE_TEST_DB=postgres` makes [`database_url`] (and so every `NodeProc`) use PostgreSQL instead
//! of a SQLite file: `scripts/test` runs the index, queue and pipeline tests once per backend.
#![allow(dead_code)]

use super::*;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// Whether the postmaster started by [`PgServer::start`] is still running.
    running: Arc<AtomicBool>,
    pid: Mutex<Option<u32>>,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// Whether this run uses PostgreSQL for the nodes' index (`SEGNODE_TEST_DB=postgres`).
pub fn postgres_selected() -> bool {
    std::env::var("SEGNODE_TEST_DB").is_ok_and(|v| v.eq_ignore_ascii_case("postgres"))
}

/// The database URL for a node whose files live in `dir`: a new PostgreSQL database when selected,
/// else a SQLite file in `dir`.
pub fn database_url(dir: &Path) -> String {
    if postgres_selected() {
        new_database()
    } else {
        format!("sqlite://{}/index.db", dir.display())
    }
}

/// A new, empty database on the shared test server; returns its URL.
pub fn new_database() -> String {
    SERVER.get_or_init(PgServer::private).database()
}

/// `psql -At -c SQL` against a database URL of [`new_database`]; returns stdout.
pub fn psql(url: &str, sql: &str) -> String {
    let out = run_with_timeout(
        Command::new(bin_dir().join("psql")).args(["-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<major>/bin).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, b)| b).expect(
        "PostgreSQL server programs not found under /usr/lib/postgresql: run scripts/install-test-deps",
    )
}

/// The (uid, gid) to run the server as: ourselves, or `postgres` when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions; getpwnam is called with a NUL-terminated string and its
    // result read before any other call that could reuse its static buffer.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root and no `postgres` user: install Debian's postgresql (scripts/install-test-deps)"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A command that runs as the server user and receives `SIGQUIT` (PostgreSQL's immediate shutdown)
/// when the thread that started it ends.
fn server_command(program: PathBuf, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // after the credential change, which clears it
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Remove clusters of test runs that are gone (their postmaster is not running).
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("segnode-pg-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl PgServer {
    /// A server of the caller's own (a test that stops and restarts it); stopped and removed when
    /// dropped.
    pub fn private() -> PgServer {
        sweep_stale();
        let bin = bin_dir();
        let user = server_user();
        let dir =
            std::env::temp_dir().join(format!("segnode-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let out = run_with_timeout(
            server_command(bin.join("initdb"), user)
                .args(["-D", &dir.join("data").display().to_string()])
                .args(["-U", "segnode", "-A", "trust", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "--no-instructions"]),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            port: free_port(),
            dir,
            bin,
            user,
            running: Arc::new(AtomicBool::new(false)),
            pid: Mutex::new(None),
        };
        server.start();
        server
    }

    /// A new, empty database on this server; returns its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let out = run_with_timeout(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "segnode", &name]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://segnode@127.0.0.1:{}/{name}", self.port)
    }

    /// Start the postmaster (again) on the same cluster and port; returns when it accepts connections.
    pub fn start(&self) {
        let log = self.dir.join("postgres.log");
        let (tx, rx) = std::sync::mpsc::channel();
        let (bin, user, port, dir) = (self.bin.clone(), self.user, self.port, self.dir.clone());
        let running = self.running.clone();
        running.store(true, Ordering::SeqCst);
        // the server's parent-death signal follows this thread: it lives until the server exits
        std::thread::spawn(move || {
            let logf = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("postgres.log"))
                .expect("postgres log");
            let child = server_command(bin.join("postgres"), user)
                .args(["-D", &dir.join("data").display().to_string()])
                .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
                .args(["-k", &dir.display().to_string()])
                // a test cluster: durability of the server itself is not under test
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                .stdout(Stdio::null())
                .stderr(logf)
                .spawn();
            match child {
                Ok(mut c) => {
                    let _ = tx.send(Ok(c.id()));
                    let _ = c.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            running.store(false, Ordering::SeqCst);
        });
        let pid = rx
            .recv()
            .expect("server thread")
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        *self.pid.lock().unwrap() = Some(pid);
        let start = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "segnode", "-d", "postgres"])
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                self.running.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60),
                "postgres did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the postmaster (fast shutdown: connections are cut) and wait until it has exited.
    pub fn stop(&self) {
        self.signal(libc::SIGINT);
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid.lock().unwrap().take() {
            // SAFETY: plain kill(2) on the postmaster we started
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
        let start = Instant::now();
        while self.running.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "postgres did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.signal(libc::SIGQUIT);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
