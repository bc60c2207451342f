//! An Orthanc process as the PACS of the pipeline tests: Debian's package, a temporary configuration and
//! storage, free DICOM and HTTP ports on 127.0.0.1; REST queries through curl. Killed when dropped.
#![allow(dead_code)]

use super::*;
use serde_json::Value;
use std::process::Child;

pub struct OrthancProc {
    pub dir: tempfile::TempDir,
    pub dicom_port: u16,
    pub http_port: u16,
    child: Option<Child>,
}

impl OrthancProc {
    pub fn start() -> OrthancProc {
        OrthancProc::start_with(|_, _| {})
    }

    /// Start with the test configuration edited by `adapt(config, dir)` first (e.g. a deployment's own
    /// configuration merged in, with paths under `dir` and the ports kept).
    pub fn start_with(adapt: impl FnOnce(&mut Value, &Path)) -> OrthancProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = OrthancProc {
            dir,
            dicom_port: free_port(),
            http_port: free_port(),
            child: None,
        };
        let mut cfg = serde_json::json!({
            "Name": "segnode-test", "StorageDirectory": o.dir.path().join("db"), "IndexDirectory": o.dir.path().join("db"),
            "DicomAet": "ORTHANC", "DicomPort": o.dicom_port, "HttpPort": o.http_port, "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true,
            "Plugins": [], "HttpBindAddress": "127.0.0.1", "DicomBindAddress": "127.0.0.1"
        });
        adapt(&mut cfg, o.dir.path());
        std::fs::write(o.dir.path().join("orthanc.json"), cfg.to_string()).expect("orthanc config");
        o.spawn();
        o
    }

    /// (Re)start on the same storage and ports.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("orthanc.log"))
            .unwrap();
        let child = Command::new("Orthanc")
            .arg(self.dir.path().join("orthanc.json"))
            .env("TCP_NODELAY", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Orthanc (Debian package orthanc)");
        self.child = Some(child);
        let start = Instant::now();
        while self.try_get("/system").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Orthanc did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    fn try_get(&self, path: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "10",
                &format!("http://127.0.0.1:{}{path}", self.http_port),
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// GET a REST resource as JSON.
    pub fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|| panic!("Orthanc GET {path} failed:\n{}", self.log()))
    }

    /// Orthanc series ids whose Modality is `modality`.
    pub fn series_of_modality(&self, modality: &str) -> Vec<String> {
        self.get("/series")
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|id| {
                let id = id.as_str()?.to_string();
                (self.get(&format!("/series/{id}"))["MainDicomTags"]["Modality"] == modality)
                    .then_some(id)
            })
            .collect()
    }

    /// Download every instance of a series into `dir`; returns the files.
    pub fn download_series(&self, series_id: &str, dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for inst in self
            .get(&format!("/series/{series_id}/instances"))
            .as_array()
            .unwrap()
        {
            let id = inst["ID"].as_str().unwrap();
            let path = dir.join(format!("{id}.dcm"));
            let st = Command::new("curl")
                .args(["-sf", "--max-time", "30", "-o"])
                .arg(&path)
                .arg(format!(
                    "http://127.0.0.1:{}/instances/{id}/file",
                    self.http_port
                ))
                .status()
                .unwrap();
            assert!(st.success(), "download of {id} failed");
            files.push(path);
        }
        files
    }
}

impl Drop for OrthancProc {
    fn drop(&mut self) {
        self.stop();
    }
}
