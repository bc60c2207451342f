//! The web console's API and security (issue 13), against a real `segnode serve` process: each plane of
//! a segmented chest phantom renders as PNG with and without the overlay and the two differ where the
//! mask is (coloured outline pixels only); a foreign Host header is refused; actions need the admin
//! token (401 without, 403 with a wrong one) and are recorded in the history; the token file is 0600;
//! pages carry the security headers. HTTP with curl (like `support::http_get`).

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::node::{phantom, storescu, NodeProc};
use support::*;

/// An HTTP answer: status, headers (lower-case names), body.
struct Answer {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.code,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// curl `method` `url` with extra `args` (headers, data).
fn curl(method: &str, port: u16, path: &str, args: &[&str]) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-s", "-m", "60", "-X", method, "-D"])
            .arg(&h)
            .arg("-o")
            .arg(&b)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(format!("http://127.0.0.1:{port}{path}")),
        Duration::from_secs(90),
    );
    let headers = std::fs::read_to_string(&h)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        code: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers,
        body: std::fs::read(&b).unwrap_or_default(),
    }
}

/// Decode a PNG: (width, height, RGB bytes).
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

const LUNG_LOCAL: &str = "[[rules]]\nname = \"chest\"\npipelines = [\"lung\"]\ndestinations = []\n[rules.match]\nmodality = [\"CT\"]\nmin_slices = 15\n";

/// A node that segmented a small chest phantom (results kept locally); returns it and the series UID.
fn segmented_chest(data: &Path) -> (NodeProc, String) {
    let dir = data.join("chest");
    phantom(&dir, &data.join("truth.raw"), 40, 128);
    let node = NodeProc::start_with(&[], LUNG_LOCAL);
    let out = storescu(node.port, &files_under(&dir), &[]);
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = wait_for("the lung job done", Duration::from_secs(180), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    (node, job["series_uid"].as_str().unwrap().to_string())
}

#[test]
fn planes_render_with_and_without_the_overlay() {
    let data = tempfile::tempdir().unwrap();
    let (node, uid) = segmented_chest(data.path());
    let http = node.http_port();

    let view = curl("GET", http, &format!("/api/series/{uid}/view"), &[]);
    assert_eq!(view.code, 200, "{}", String::from_utf8_lossy(&view.body));
    let v = view.json();
    assert_eq!(v["planes"]["axial"], 40, "{v}");
    let labels: Vec<&str> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert!(labels.iter().any(|l| l.contains("lung")), "{labels:?}");

    // the middle axial and coronal planes cross both lungs; the middle sagittal one is the mediastinum,
    // so a sagittal plane through the right lung
    for (plane, index) in [("axial", 20), ("coronal", 64), ("sagittal", 40)] {
        let get = |overlay: bool| {
            let a = curl(
                "GET",
                http,
                &format!("/api/series/{uid}/image?plane={plane}&index={index}&overlay={overlay}&window=lung"),
                &[],
            );
            assert_eq!(a.code, 200, "{plane}: {}", String::from_utf8_lossy(&a.body));
            assert_eq!(a.header("content-type"), Some("image/png"));
            assert_eq!(a.header("cache-control"), Some("no-store"));
            decode_png(&a.body)
        };
        let (w, h, with) = get(true);
        let (w2, h2, without) = get(false);
        assert_eq!((w, h), (w2, h2));
        assert_eq!(w, 128, "{plane}");
        let mut differ = 0;
        for p in 0..w * h {
            let (a, b) = (&with[p * 3..p * 3 + 3], &without[p * 3..p * 3 + 3]);
            assert!(
                b[0] == b[1] && b[1] == b[2],
                "{plane}: grey without the overlay"
            );
            if a != b {
                differ += 1;
                assert!(
                    a[0] != a[1] || a[1] != a[2],
                    "{plane}: a changed pixel is coloured"
                );
            }
        }
        println!("{plane}: {w}×{h}, {differ} outline pixels");
        assert!(
            differ > 50,
            "{plane}: the overlay shows the lungs ({differ} pixels)"
        );
    }
    // bad parameters are refused with a reason
    let bad = curl(
        "GET",
        http,
        &format!("/api/series/{uid}/image?plane=oblique"),
        &[],
    );
    assert_eq!(bad.code, 400);
    let far = curl(
        "GET",
        http,
        &format!("/api/series/{uid}/image?plane=axial&index=999"),
        &[],
    );
    assert_eq!(far.code, 400);
    assert_eq!(curl("GET", http, "/api/series/1.2.3/image", &[]).code, 404);
    // the series page and list answer with the lung results
    let page = curl("GET", http, &format!("/series/{uid}"), &[]);
    assert_eq!(page.code, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("Right lung") && html.contains("Left lung"),
        "{html}"
    );
    let list = curl("GET", http, "/api/series?modality=ct", &[]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let none = curl("GET", http, "/api/series?modality=MR", &[]).json();
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    // the console's list adds the pipelines and deliveries of each series
    let sum = curl("GET", http, "/api/series?summary=true", &[]).json();
    assert_eq!(
        sum[0]["pipelines"],
        serde_json::json!(["lung DONE"]),
        "{sum}"
    );
    // the rule tester changes nothing: no token needed
    let file = files_under(&data.path().join("chest"))[0].clone();
    let t = curl(
        "POST",
        http,
        "/api/rules/test",
        &[
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
        ],
    );
    assert_eq!(t.code, 200, "{}", String::from_utf8_lossy(&t.body));
    let t = t.json();
    assert_eq!(t["rules"][0]["rule"], "chest", "{t}");
    assert_eq!(t["rules"][0]["matches"], true, "{t}");
    assert_eq!(t["facts"]["modality"], "CT", "{t}");
}

/// A pipeline that always fails; with `BROKEN_ENV` a job is DEAD after one attempt.
const BROKEN_ENV: [(&str, &str); 2] = [
    ("SEGNODE_WORKERS__MAX_ATTEMPTS", "1"),
    ("SEGNODE_WORKERS__POLL_MS", "200"),
];
const BROKEN: &str = "[pipelines.external.broken]\ncommand = [\"false\"]\ntimeout_s = 30\n\
[[rules]]\nname = \"all\"\npipelines = [\"external:broken\"]\ndestinations = []\n";

#[test]
fn host_check_token_and_security_headers() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("chest");
    phantom(&dir, &data.path().join("truth.raw"), 4, 32);
    let node = NodeProc::start_with(&BROKEN_ENV, BROKEN);
    let http = node.http_port();
    let token = node.admin_token();
    // the token file: generated at the first start, owner-only
    let token_file = node.dir.path().join("admin-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
    assert!(token.len() >= 32);

    // pages: security headers
    let home = curl("GET", http, "/", &[]);
    assert_eq!(home.code, 200);
    let csp = home.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(home.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(home.header("cache-control"), Some("no-store"));
    // nothing loaded from another origin (the CSP would block it; the page must not need it)
    let page = String::from_utf8_lossy(&home.body);
    for external in ["src=\"http", "href=\"http", "src='http", "href='http"] {
        assert!(!page.contains(external), "{external} in the home page");
    }

    // DNS rebinding: a foreign Host is refused; localhost / 127.0.0.1 with the port are fine;
    // /health and /metrics answer any Host
    for (host, code) in [
        ("evil.example", 403),
        (&*format!("evil.example:{http}"), 403),
        (&*format!("localhost:{http}"), 200),
        (&*format!("127.0.0.1:{http}"), 200),
    ] {
        let a = curl(
            "GET",
            http,
            "/api/series",
            &["-H", &format!("Host: {host}")],
        );
        assert_eq!(a.code, code, "Host {host}");
    }
    assert_eq!(
        curl("GET", http, "/health", &["-H", "Host: prometheus.internal"]).code,
        200
    );

    // a failed job to retry
    let out = storescu(node.port, &files_under(&dir), &[]);
    assert!(out.status.success());
    let job = wait_for("the job dead", Duration::from_secs(60), || {
        node.jobs().into_iter().find(|j| j["state"] == "DEAD")
    });
    let id = job["id"].as_str().unwrap().to_string();
    let uid = job["series_uid"].as_str().unwrap().to_string();
    let retry = format!("/api/jobs/{id}/retry");

    // no token → 401; wrong token → 403; a GET cannot act; cross-origin → 403
    let none = curl("POST", http, &retry, &[]);
    assert_eq!(none.code, 401, "{}", String::from_utf8_lossy(&none.body));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = curl(
        "POST",
        http,
        &retry,
        &[
            "-H",
            "Authorization: Bearer 0123456789abcdef0123456789abcdef",
        ],
    );
    assert_eq!(wrong.code, 403);
    assert_eq!(curl("GET", http, &retry, &[]).code, 405);
    let bearer = format!("Authorization: Bearer {token}");
    let cross = curl(
        "POST",
        http,
        &retry,
        &["-H", &bearer, "-H", "Origin: http://evil.example"],
    );
    assert_eq!(cross.code, 403);
    // a cookie alone (what a forged form would carry) is not enough: the CSRF token is needed
    let cookie = format!("Cookie: segnode_admin={token}");
    assert_eq!(curl("POST", http, &retry, &["-H", &cookie]).code, 403);
    assert!(node
        .jobs()
        .iter()
        .any(|j| j["id"] == id.as_str() && j["state"] == "DEAD"));

    // with the token: retried, and the history says so
    let ok = curl("POST", http, &retry, &["-H", &bearer]);
    assert_eq!(ok.code, 200, "{}", String::from_utf8_lossy(&ok.body));
    let h = node.history(&uid);
    assert!(
        h.iter()
            .any(|e| e.starts_with("admin job") && e.contains("retried")),
        "{h:#?}"
    );
    // the login form sets an HttpOnly SameSite=Strict cookie, and refuses a wrong token
    let login = curl(
        "POST",
        http,
        "/login",
        &["--data-urlencode", &format!("token={token}")],
    );
    assert_eq!(login.code, 303, "{}", String::from_utf8_lossy(&login.body));
    let set = login.header("set-cookie").unwrap_or("");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert_eq!(
        curl("POST", http, "/login", &["--data-urlencode", "token=nope"]).code,
        403
    );
    // pause / resume
    let p = curl("POST", http, "/api/pause/processing", &["-H", &bearer]);
    assert_eq!(p.code, 200);
    assert_eq!(
        curl("GET", http, "/api/status", &[]).json()["workers"]["paused"],
        true
    );
    assert_eq!(
        curl("POST", http, "/api/resume/processing", &["-H", &bearer]).code,
        200
    );
    // metrics still come from the prometheus registry under the same names
    let m = String::from_utf8(curl("GET", http, "/metrics", &[]).body).unwrap();
    assert!(m.contains("segnode_jobs_failed_total{node="), "{m}");
}

#[test]
fn a_non_loopback_console_needs_a_token_file() {
    let node = NodeProc::prepare(&[("SEGNODE_HTTP__BIND", "0.0.0.0")], "");
    let out = run_with_timeout(
        Command::new(support::node::segnode_bin())
            .args(["--config", &node.config.display().to_string(), "serve"])
            .envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(node.dir.path()),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin token file") && err.contains("loopback"),
        "{err}"
    );
}

#[test]
fn the_status_lists_every_process_on_the_database_and_the_certificates() {
    let node = NodeProc::start(&[]);
    let mut worker = node.sibling("worker");
    worker
        .env
        .push(("SEGNODE_WORKERS__PIPELINES".into(), "noop".into()));
    worker.spawn();
    let http = node.http_port();
    let status = wait_for(
        "both processes in the status",
        Duration::from_secs(60),
        || {
            let s = curl("GET", http, "/api/status", &[]).json();
            let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
            let up = |role: &str| nodes.iter().any(|n| n["role"] == role && n["up"] == true);
            (up("serve") && up("worker")).then_some(s)
        },
    );
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["this"] == true && n["role"] == "serve"),
        "{status:#}"
    );
    assert!(status["certificates"].as_array().is_some(), "{status:#}");
    let page = curl("GET", http, "/", &[]);
    let body = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        body.contains("Nodes on this database") && body.contains("(worker,"),
        "{body}"
    );
}
