//! A DCMTK storescp on a free port that keeps what it receives in a temporary folder: a plain DICOM
//! peer (a destination, or a node played by DCMTK). Killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct StoreScp {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl StoreScp {
    /// Start `storescp -aet AET -od TMP PORT` and wait until it listens.
    pub fn start(aet: &str) -> StoreScp {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port();
        let child = Command::new("storescp")
            .args(["-aet", aet, "-od"])
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp (DCMTK)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "storescp did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        StoreScp { child, port, dir }
    }

    /// The files received so far.
    pub fn received(&self) -> Vec<PathBuf> {
        super::files_under(self.dir.path())
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
