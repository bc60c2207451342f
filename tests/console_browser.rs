//! The web console in real headless Chromium (Debian `chromium` + `chromium-driver`, WebDriver through
//! fantoccini), one browser at a time, each with its own profile directory: a series sent by storescu
//! appears on /series without a reload; its page shows both lungs with their volumes; moving the axial
//! slider changes the image and toggling a segment changes it and back; retrying a failed job from the
//! page is refused without the token and works after the admin login.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::node::{phantom, storescu, NodeProc};
use support::*;

/// One browser at a time (the machine is small, and Chromium is large).
static SERIAL: Mutex<()> = Mutex::new(());

/// chromedriver on a free port, and a headless Chromium session with its own profile; both ended when
/// dropped.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; scripts/install-test-deps installs it)");
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         format!("--user-data-dir={}", profile.path().display()), "--window-size=1500,1100"],
            }),
        );
        let client = rt.block_on(async {
            let start = Instant::now();
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                {
                    Ok(c) => break c,
                    Err(e) => {
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "WebDriver session: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Browser {
            driver,
            client: Some(client),
            _profile: profile,
            rt,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session")
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).expect("goto");
    }

    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                self.c()
                    .find(Locator::Css(css))
                    .await?
                    .send_keys(text)
                    .await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Wait (bounded) until `script` returns something truthy; returns it.
    fn wait_js(&self, what: &str, limit: Duration, script: &str) -> Value {
        wait_for(what, limit, || {
            let v = self.js(script);
            match &v {
                Value::Null | Value::Bool(false) => None,
                Value::String(s) if s.is_empty() => None,
                _ => Some(v),
            }
        })
    }

    fn screenshot(&self, path: &Path) {
        let png = self.rt.block_on(self.c().screenshot()).expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const LUNG_LOCAL: &str = "[[rules]]\nname = \"chest\"\npipelines = [\"lung\"]\ndestinations = []\n[rules.match]\nmodality = [\"CT\"]\nmin_slices = 15\n";

/// A data URL of the pixels an <img> shows (a canvas copy), once it has loaded `src`.
const IMG_PIXELS: &str = "const i = document.getElementById('img-axial'); \
    if (!i.complete || !i.naturalWidth || !i.src.includes('index=')) return null; \
    const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight; \
    c.getContext('2d').drawImage(i, 0, 0); return c.toDataURL();";

#[test]
fn a_series_appears_live_and_its_page_shows_the_lungs() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("chest");
    phantom(&dir, &data.path().join("truth.raw"), 40, 128);
    let node = NodeProc::start_with(&[], LUNG_LOCAL);
    let base = format!("http://127.0.0.1:{}", node.http_port());
    let b = Browser::start();

    // the list is open before the series arrives; it shows it without a reload
    b.goto(&format!("{base}/series"));
    b.js("window.__sameDocument = true; return 1;");
    let out = storescu(node.port, &files_under(&dir), &[]);
    assert!(out.status.success());
    let uid = b.wait_js(
        "the series row",
        Duration::from_secs(30),
        "const a = document.querySelector('#series-table tbody tr td a'); return a ? a.textContent : null;",
    );
    assert_eq!(
        b.js("return window.__sameDocument === true;"),
        true,
        "the page was not reloaded"
    );
    let uid = uid.as_str().unwrap().to_string();
    wait_for("the lung job", Duration::from_secs(180), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });

    // the series page: both lungs with their volumes
    let t0 = Instant::now();
    b.goto(&format!("{base}/series/{uid}"));
    let text = b.js("return document.body.innerText;");
    let text = text.as_str().unwrap();
    assert!(
        text.contains("Right lung") && text.contains("Left lung"),
        "{text}"
    );
    assert!(text.contains("volume (mL)"), "{text}");

    // the viewer: the three planes load, then the sliders and segment toggles come
    b.wait_js(
        "the segment toggles",
        Duration::from_secs(60),
        "return document.querySelectorAll('input.segment').length >= 2;",
    );
    b.wait_js(
        "three planes painted",
        Duration::from_secs(60),
        "return ['axial','coronal','sagittal'].every(p => { const i = document.getElementById('img-' + p); return i.complete && i.naturalWidth > 0; });",
    );
    println!(
        "series page with three planes painted in {} ms",
        t0.elapsed().as_millis()
    );
    std::fs::create_dir_all(repo_root().join("target/console")).ok();
    b.screenshot(&repo_root().join("target/console/series-page.png"));

    // moving the axial slider changes the image
    b.js("const s = document.getElementById('slider-axial'); s.value = 20; s.dispatchEvent(new Event('input')); return 1;");
    let before = b.wait_js("the axial image at 20", Duration::from_secs(30), IMG_PIXELS);
    b.js("const s = document.getElementById('slider-axial'); s.value = 8; s.dispatchEvent(new Event('input')); return 1;");
    let moved = b.wait_js(
        "another axial image",
        Duration::from_secs(30),
        &IMG_PIXELS.replace("includes('index=')", "includes('index=8&')"),
    );
    assert_ne!(before, moved, "moving the slider changes the image");
    b.js("const s = document.getElementById('slider-axial'); s.value = 20; s.dispatchEvent(new Event('input')); return 1;");
    let back = b.wait_js(
        "the axial image at 20 again",
        Duration::from_secs(30),
        &IMG_PIXELS.replace("includes('index=')", "includes('index=20&')"),
    );
    assert_eq!(before, back);

    // toggling a segment changes the image, and toggling it again changes it back
    b.click("input.segment");
    let toggled = b.wait_js(
        "the image without one segment",
        Duration::from_secs(30),
        &IMG_PIXELS.replace(
            "includes('index=')",
            "includes('index=20&') && !/segments=1,2$/.test(i.src)",
        ),
    );
    assert_ne!(before, toggled, "hiding a segment changes the image");
    b.click("input.segment");
    let again = b.wait_js(
        "the image with both segments",
        Duration::from_secs(30),
        &IMG_PIXELS.replace(
            "includes('index=')",
            "includes('index=20&') && /segments=1,2$/.test(i.src)",
        ),
    );
    assert_eq!(before, again, "showing it again restores the image");
}

/// A pipeline that always fails; with `BROKEN_ENV` a job is DEAD after one attempt.
const BROKEN_ENV: [(&str, &str); 2] = [
    ("SEGNODE_WORKERS__MAX_ATTEMPTS", "1"),
    ("SEGNODE_WORKERS__POLL_MS", "200"),
];
const BROKEN: &str = "[pipelines.external.broken]\ncommand = [\"false\"]\ntimeout_s = 30\n\
[[rules]]\nname = \"all\"\npipelines = [\"external:broken\"]\ndestinations = []\n";

#[test]
fn retry_from_the_page_needs_the_token() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("chest");
    phantom(&dir, &data.path().join("truth.raw"), 4, 32);
    let node = NodeProc::start_with(&BROKEN_ENV, BROKEN);
    let base = format!("http://127.0.0.1:{}", node.http_port());
    assert!(storescu(node.port, &files_under(&dir), &[])
        .status
        .success());
    let job = wait_for("a dead job", Duration::from_secs(60), || {
        node.jobs().into_iter().find(|j| j["state"] == "DEAD")
    });
    let uid = job["series_uid"].as_str().unwrap().to_string();
    let b = Browser::start();

    // without the token: refused, and the page says why
    b.goto(&format!("{base}/jobs"));
    b.click("button.retry");
    let said = b.wait_js(
        "the refusal",
        Duration::from_secs(20),
        "const f = document.querySelector('#flash .err'); return f ? f.textContent : null;",
    );
    assert!(said.as_str().unwrap().contains("log in"), "{said}");
    assert!(!node.history(&uid).iter().any(|e| e.starts_with("admin")));

    // log in with the token, retry again: accepted and recorded
    b.goto(&format!("{base}/login"));
    b.type_into("#token", &node.admin_token());
    b.click("#login");
    b.wait_js(
        "back on the status page",
        Duration::from_secs(20),
        "return location.pathname === '/';",
    );
    b.goto(&format!("{base}/jobs"));
    b.click("button.retry");
    b.wait_js(
        "the acceptance",
        Duration::from_secs(20),
        "const f = document.querySelector('#flash .ok'); return f ? f.textContent : null;",
    );
    wait_for("the admin event", Duration::from_secs(20), || {
        node.history(&uid)
            .into_iter()
            .find(|e| e.starts_with("admin job") && e.contains("retried"))
    });
}

/// Time to first paint of `/series/{uid}` for a 512×512×300 chest series, and until its three planes
/// are painted (volume loaded cold, then warm). A measurement for the closing note (slow: run with
/// `cargo test --release --test console_browser -- --ignored --nocapture`).
#[test]
#[ignore]
fn first_paint_of_a_512_series() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("chest");
    phantom(&dir, &data.path().join("truth.raw"), 300, 512);
    let node = NodeProc::start_with(&[], LUNG_LOCAL);
    let base = format!("http://127.0.0.1:{}", node.http_port());
    assert!(storescu(node.port, &files_under(&dir), &[])
        .status
        .success());
    let job = wait_for("the lung job", Duration::from_secs(600), || {
        node.jobs().into_iter().find(|j| j["state"] == "DONE")
    });
    let uid = job["series_uid"].as_str().unwrap().to_string();
    let b = Browser::start();
    for round in ["cold", "warm"] {
        let t0 = Instant::now();
        b.goto(&format!("{base}/series/{uid}"));
        let fcp = b.wait_js(
            "the first contentful paint",
            Duration::from_secs(30),
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;",
        );
        b.wait_js(
            "three planes painted",
            Duration::from_secs(120),
            "return ['axial','coronal','sagittal'].every(p => { const i = document.getElementById('img-' + p); return i.complete && i.naturalWidth > 0; });",
        );
        let planes = t0.elapsed().as_millis();
        b.wait_js(
            "the attributes",
            Duration::from_secs(120),
            "return document.querySelectorAll('#attributes tr').length > 5;",
        );
        println!(
            "FIRST PAINT /series/{{uid}} 512×512×300 ({round}): first contentful paint {fcp} ms, three planes painted {planes} ms, attributes {} ms",
            t0.elapsed().as_millis()
        );
    }
    std::fs::create_dir_all(repo_root().join("target/console")).ok();
    b.screenshot(&repo_root().join("target/console/series-page-512.png"));
}
