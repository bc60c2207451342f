//! The console's server-rendered pages: status, series (live list), one series (history, result,
//! viewer, attributes), jobs, outbox, rules, login. Plain HTML with the embedded stylesheet and one
//! same-origin script (`/assets/console.js`) that refreshes lists, drives the viewer and posts actions.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::api::{self, SeriesFilter};
use super::guard::{self, COOKIE};
use super::state::Console;
use segnode_db::jobs::Queue;
use segnode_db::outbox::Outbox;

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of ms since the epoch.
pub fn when(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "–".into() };
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn page(c: &Console, title: &str, active: &str, body: &str) -> Response {
    let nav: String = [
        ("/", "Status"),
        ("/series", "Series"),
        ("/jobs", "Jobs"),
        ("/outbox", "Outbox"),
        ("/rules", "Rules"),
    ]
    .iter()
    .map(|(href, name)| {
        let cls = if *href == active {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{cls}>{name}</a>")
    })
    .collect();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{csrf}\">\
         <title>{title} · segnode {node}</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body><header><span class=\"brand\">segnode</span><span class=\"node\">{node}</span>\
         <nav>{nav}</nav><a class=\"login\" href=\"/login\">admin login</a></header>\
         <div id=\"flash\" role=\"status\"></div><main>{body}</main>\
         <script src=\"/assets/console.js\"></script></body></html>",
        csrf = esc(&c.csrf),
        title = esc(title),
        node = esc(&c.node),
    ))
    .into_response()
}

fn error_page(c: &Console, e: api::ApiError) -> Response {
    let code = match &e {
        api::ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut r = page(
        c,
        "Error",
        "",
        &format!("<h1>Error</h1><p>{}</p>", esc(&e.to_string())),
    );
    *r.status_mut() = code;
    r
}

fn counts(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, n)| format!("<span class=\"state s-{k}\">{k}</span> {n}", k = esc(k)))
            .collect::<Vec<_>>()
            .join(" &nbsp; "),
        _ => "–".into(),
    }
}

pub async fn status(State(c): State<Console>) -> Response {
    let s = api::status_value(&c).await;
    let disk = match s["disk"].as_object() {
        Some(d) => format!(
            "{} MB free of {} MB (reserve {} MB){}",
            d["free_mb"],
            d["total_mb"],
            d["min_free_mb"],
            if d["low"] == true {
                " <span class=\"bad\">below the reserve: new instances are refused</span>"
            } else {
                ""
            }
        ),
        None => "unknown".into(),
    };
    let errors: String = s["last_errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "<li><a href=\"/series/{uid}\">{what}</a> <span class=\"state s-{st}\">{st}</span>: {err}</li>",
                        uid = esc(e["series_uid"].as_str().unwrap_or("")),
                        what = esc(e["what"].as_str().unwrap_or("")),
                        st = esc(e["state"].as_str().unwrap_or("")),
                        err = esc(e["error"].as_str().unwrap_or(""))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let nodes: String = s["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    format!(
                        "<li>{name} ({role}, segnode {version}, pid {pid}){this} — {up}</li>",
                        name = esc(n["name"].as_str().unwrap_or("")),
                        role = esc(n["role"].as_str().unwrap_or("")),
                        version = esc(n["version"].as_str().unwrap_or("")),
                        pid = n["pid"],
                        this = if n["this"] == true && n["role"] == "serve" {
                            " — this console"
                        } else {
                            ""
                        },
                        up = if n["up"] == true {
                            "up".to_string()
                        } else {
                            format!(
                                "<span class=\"bad\">not seen since {}</span>",
                                when(n["seen_ms"].as_i64())
                            )
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let certs: String = s["certificates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let days = c["days_left"].as_f64();
                    format!(
                        "<li>{what}: {left}</li>",
                        what = esc(c["certificate"].as_str().unwrap_or("")),
                        left = match days {
                            None => "expiry unreadable".to_string(),
                            Some(d) if c["warning"] == true => {
                                format!("<span class=\"bad\">expires in {d} days</span>")
                            }
                            Some(d) => format!("expires in {d} days"),
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let l = &s["listeners"][0];
    let paused = |v: &Value| {
        if v == &Value::Bool(true) {
            "<span class=\"bad\">paused</span>"
        } else {
            "running"
        }
    };
    let body = format!(
        "<h1>Status</h1><table class=\"kv\">\
         <tr><th>Node</th><td>{node} (segnode {version})</td></tr>\
         <tr><th>DICOM listener</th><td>AE {ae} on {bind}:{port}</td></tr>\
         <tr><th>Database</th><td>{db} — {up}</td></tr>\
         <tr><th>Workers</th><td>{workers} — pipelines {pipelines} — {wp} \
           <button data-post=\"/api/pause/processing\">Pause</button> <button data-post=\"/api/resume/processing\">Resume</button></td></tr>\
         <tr><th>Dispatcher</th><td>destinations {dests} — {dp} \
           <button data-post=\"/api/pause/delivery\">Pause</button> <button data-post=\"/api/resume/delivery\">Resume</button></td></tr>\
         <tr><th>Disk (store)</th><td>{disk}</td></tr>\
         <tr><th>Series</th><td>{series}</td></tr><tr><th>Jobs</th><td>{jobs}</td></tr>\
         <tr><th>Deliveries</th><td>{outbox}</td></tr></table>\
         <h2>Nodes on this database</h2><ul>{nodes}</ul>\
         <h2>TLS certificates</h2><ul>{certs}</ul>\
         <h2>Last errors</h2><ul class=\"errors\">{errors}</ul>",
        node = esc(&c.node),
        version = esc(s["version"].as_str().unwrap_or("")),
        ae = esc(l["ae_title"].as_str().unwrap_or("")),
        bind = esc(l["bind"].as_str().unwrap_or("")),
        port = l["port"],
        db = esc(s["database"]["backend"].as_str().unwrap_or("")),
        up = if s["database"]["up"] == true { "up" } else { "<span class=\"bad\">unreachable</span>" },
        workers = if s["workers"]["enabled"] == true { "in this process" } else { "elsewhere (segnode worker)" },
        pipelines = esc(&s["workers"]["pipelines"].to_string()),
        wp = paused(&s["workers"]["paused"]),
        dests = esc(&s["dispatcher"]["destinations"].to_string()),
        dp = paused(&s["dispatcher"]["paused"]),
        series = counts(&s["series"]),
        jobs = counts(&s["jobs"]),
        outbox = counts(&s["outbox"]),
        errors = if errors.is_empty() { "<li>none</li>".to_string() } else { errors },
        nodes = if nodes.is_empty() { "<li>none seen yet</li>".to_string() } else { nodes },
        certs = if certs.is_empty() { "<li>none in use</li>".to_string() } else { certs },
    );
    page(&c, "Status", "/", &body)
}

pub async fn series_list(State(c): State<Console>, Query(mut f): Query<SeriesFilter>) -> Response {
    f.summary = Some(true);
    let rows = match api::series_values(&c, &f).await {
        Ok(r) => r,
        Err(e) => return error_page(&c, e),
    };
    let field = |name: &str, v: &Option<String>, ph: &str| {
        format!(
            "<input name=\"{name}\" placeholder=\"{ph}\" value=\"{}\">",
            esc(v.as_deref().unwrap_or(""))
        )
    };
    let query = serde_urlencode(&f);
    let body = format!(
        "<h1>Series</h1><form class=\"filters\" method=\"get\">{}{}{}{}<input type=\"date\" name=\"since\" value=\"{}\">\
         <button>Filter</button></form>\
         <table class=\"list\" id=\"series-table\" data-api=\"/api/series{query}\"><thead><tr>\
         <th>Series</th><th>State</th><th>Modality</th><th>Description</th><th>Instances</th><th>Calling AE</th>\
         <th>First received</th><th>Last received</th><th>Completion</th><th>Pipelines</th><th>Deliveries</th>\
         <th>Patient ID</th></tr></thead><tbody>{}</tbody></table>",
        field("state", &f.state, "state"),
        field("modality", &f.modality, "modality"),
        field("ae", &f.ae, "calling AE"),
        field("q", &f.q, "series UID / patient ID"),
        esc(f.since.as_deref().unwrap_or("")),
        rows.iter().map(series_row).collect::<String>()
    );
    page(&c, "Series", "/series", &body)
}

fn serde_urlencode(f: &SeriesFilter) -> String {
    let mut parts: Vec<String> = [
        ("state", &f.state),
        ("modality", &f.modality),
        ("ae", &f.ae),
        ("q", &f.q),
        ("since", &f.since),
    ]
    .iter()
    .filter_map(|(k, v)| {
        v.as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| format!("{k}={}", pct(v)))
    })
    .collect();
    parts.push("summary=true".into());
    format!("?{}", parts.join("&"))
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// "SENT 1, DEAD 1", or "kept locally" for a processed series without deliveries.
fn deliveries_cell(s: &Value) -> String {
    let text = s["deliveries"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let processed = s["pipelines"].as_array().is_some_and(|p| !p.is_empty());
    if text.is_empty() && processed {
        "kept locally".into()
    } else {
        text
    }
}

/// One row of the series table (the script renders the same from `/api/series`).
fn series_row(s: &Value) -> String {
    let t = |k: &str| esc(s[k].as_str().unwrap_or(""));
    format!(
        "<tr><td><a href=\"/series/{uid}\">{uid}</a></td><td><span class=\"state s-{st}\">{st}</span></td>\
         <td>{m}</td><td>{d}</td><td>{n}</td><td>{ae}</td><td>{f}</td><td>{l}</td><td>{r}</td><td>{pl}</td><td>{dl}</td>\
         <td>{p}</td></tr>",
        uid = t("series_uid"),
        st = t("state"),
        m = t("modality"),
        d = t("series_description"),
        n = s["instance_count"],
        ae = t("calling_ae"),
        f = when(s["first_received_ms"].as_i64()),
        l = when(s["last_received_ms"].as_i64()),
        r = t("completion_reason"),
        pl = esc(
            &s["pipelines"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        dl = esc(&deliveries_cell(s)),
        p = t("patient_id"),
    )
}

pub async fn series_page(State(c): State<Console>, Path(uid): Path<String>) -> Response {
    let d = match api::series_detail(&c, &uid).await {
        Ok(d) => d,
        Err(e) => return error_page(&c, e),
    };
    let s = &d["series"];
    let t = |v: &Value| esc(v.as_str().unwrap_or(""));
    let history: String = d["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "<li><time>{}</time> <span class=\"ev ev-{ev}\">{ev}</span> rev {} — {}</li>",
                when(e["at_ms"].as_i64()),
                e["revision"],
                t(&e["detail"]),
                ev = t(&e["event"]),
            )
        })
        .collect();
    let results: String = d["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let res = &r["result"];
            let segs: String = res["segments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sg| {
                    let m: String = sg["measurements"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("<li>{}: <b>{}</b></li>", esc(k), esc(&v.to_string())))
                        .collect();
                    format!("<tr><td>{}</td><td>{}</td><td><ul>{m}</ul></td></tr>", sg["number"], t(&sg["label"]))
                })
                .collect();
            let contacts = match &res["details"] {
                Value::Null => String::new(),
                v => format!("<details><summary>Details (contacts…)</summary><pre>{}</pre></details>",
                             esc(&serde_json::to_string_pretty(v).unwrap_or_default())),
            };
            format!(
                "<div class=\"result\"><h3>{p} — {st} <small>(job {job}, revision {rev}, {ms} ms)</small></h3>\
                 <table class=\"list segments\"><thead><tr><th>#</th><th>Segment</th><th>Measurements</th></tr></thead><tbody>{segs}</tbody></table>{contacts}</div>",
                p = t(&r["pipeline"]),
                st = t(&res["status"]),
                job = t(&r["job"]),
                rev = r["revision"],
                ms = res["total_ms"],
            )
        })
        .collect();
    let jobs: String = d["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(job_row)
        .collect();
    let deliveries: String = d["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(delivery_row)
        .collect();
    let force = if s["state"] == "RECEIVING" {
        format!(
            "<button data-post=\"/api/series/{}/complete\">Force complete</button>",
            t(&s["series_uid"])
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Series <code>{uid}</code></h1>\
         <p><span class=\"state s-{st}\">{st}</span> revision {rev} — {m} {desc} — {n} instances from {ae} — \
         patient {pid} — study <code>{study}</code> {force}</p>\
         <section id=\"viewer\" data-uid=\"{uid}\"><div class=\"toolbar\">Window \
         <select id=\"window\"><option value=\"lung\">lung</option><option value=\"mediastinum\">mediastinum</option>\
         <option value=\"bone\">bone</option><option value=\"brain\">brain</option></select> \
         <span id=\"segments\">loading the volume…</span></div>\
         <div class=\"planes\">\
         <figure><img id=\"img-axial\" data-plane=\"axial\" alt=\"axial plane\"><input type=\"range\" id=\"slider-axial\" data-plane=\"axial\" min=\"0\" max=\"0\" value=\"0\"><figcaption>axial <span id=\"pos-axial\"></span></figcaption></figure>\
         <figure><img id=\"img-coronal\" data-plane=\"coronal\" alt=\"coronal plane\"><input type=\"range\" id=\"slider-coronal\" data-plane=\"coronal\" min=\"0\" max=\"0\" value=\"0\"><figcaption>coronal <span id=\"pos-coronal\"></span></figcaption></figure>\
         <figure><img id=\"img-sagittal\" data-plane=\"sagittal\" alt=\"sagittal plane\"><input type=\"range\" id=\"slider-sagittal\" data-plane=\"sagittal\" min=\"0\" max=\"0\" value=\"0\"><figcaption>sagittal <span id=\"pos-sagittal\"></span></figcaption></figure>\
         </div><table class=\"kv\" id=\"attributes\"></table></section>\
         <h2>Result</h2>{results}\
         <h2>History</h2><ol class=\"timeline\">{history}</ol>\
         <h2>Jobs</h2><table class=\"list\">{jh}<tbody>{jobs}</tbody></table>\
         <h2>Deliveries</h2><table class=\"list\">{dh}<tbody>{deliveries}</tbody></table>",
        uid = t(&s["series_uid"]),
        st = t(&s["state"]),
        rev = s["revision"],
        m = t(&s["modality"]),
        desc = t(&s["series_description"]),
        n = s["instance_count"],
        ae = t(&s["calling_ae"]),
        pid = t(&s["patient_id"]),
        study = t(&s["study_uid"]),
        results = if results.is_empty() { "<p>No result yet.</p>".to_string() } else { results },
        jh = JOB_HEAD,
        dh = DELIVERY_HEAD,
    );
    page(&c, &format!("Series {uid}"), "/series", &body)
}

const JOB_HEAD: &str =
    "<thead><tr><th>Job</th><th>Pipeline</th><th>State</th><th>Attempts</th><th>Series</th>\
    <th>Created</th><th>Finished</th><th>Error</th><th></th></tr></thead>";

fn job_row(j: &Value) -> String {
    let t = |k: &str| esc(j[k].as_str().unwrap_or(""));
    let retry = if matches!(j["state"].as_str(), Some("FAILED" | "DEAD")) {
        format!(
            "<button class=\"retry\" data-post=\"/api/jobs/{}/retry\">Retry</button>",
            t("id")
        )
    } else {
        String::new()
    };
    format!(
        "<tr id=\"job-{id}\"><td>{id}</td><td>{p}</td><td><span class=\"state s-{st}\">{st}</span></td><td>{a}</td>\
         <td><a href=\"/series/{uid}\">{uid}</a></td><td>{c}</td><td>{f}</td><td>{e}</td><td>{retry}</td></tr>",
        id = t("id"),
        p = t("pipeline"),
        st = t("state"),
        a = j["attempts"],
        uid = t("series_uid"),
        c = when(j["created_ms"].as_i64()),
        f = when(j["finished_ms"].as_i64()),
        e = t("error"),
    )
}

const DELIVERY_HEAD: &str =
    "<thead><tr><th>Delivery</th><th>Destination</th><th>State</th><th>Attempts</th>\
    <th>Status</th><th>Object</th><th>Sent</th><th>Error</th><th></th></tr></thead>";

fn delivery_row(d: &Value) -> String {
    let t = |k: &str| esc(d[k].as_str().unwrap_or(""));
    let resend = if matches!(d["state"].as_str(), Some("DEAD" | "SENT")) {
        format!(
            "<button data-post=\"/api/outbox/{}/resend\">Resend</button>",
            t("id")
        )
    } else {
        String::new()
    };
    format!(
        "<tr><td>{id}</td><td>{dest}</td><td><span class=\"state s-{st}\">{st}</span></td><td>{a}</td><td>{ls}</td>\
         <td><code>{sop}</code></td><td>{sent}</td><td>{e}</td><td>{resend}</td></tr>",
        id = t("id"),
        dest = t("destination"),
        st = t("state"),
        a = d["attempts"],
        ls = t("last_status"),
        sop = t("sop_instance_uid"),
        sent = when(d["sent_ms"].as_i64()),
        e = t("error"),
    )
}

pub async fn jobs(State(c): State<Console>) -> Response {
    let mut jobs = match Queue::new(c.index.clone()).list(None).await {
        Ok(j) => j,
        Err(e) => return error_page(&c, e.into()),
    };
    jobs.sort_by_key(|j| !matches!(j.state.as_str(), "FAILED" | "DEAD"));
    let rows: String = jobs
        .iter()
        .map(|j| job_row(&serde_json::to_value(j).unwrap_or_default()))
        .collect();
    page(&c, "Jobs", "/jobs", &format!("<h1>Jobs</h1><p>Failures first.</p><table class=\"list\" id=\"jobs-table\">{JOB_HEAD}<tbody>{rows}</tbody></table>"))
}

pub async fn outbox(State(c): State<Console>) -> Response {
    let items = match Outbox::new(c.index.clone()).list().await {
        Ok(i) => i,
        Err(e) => return error_page(&c, e.into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // destination → (sent, pending, dead, last success, backoff until)
    type Tally = (usize, usize, usize, Option<i64>, Option<i64>);
    let mut per: BTreeMap<String, Tally> = BTreeMap::new();
    for d in &c.settings.destinations {
        per.entry(d.name.clone()).or_default();
    }
    for i in &items {
        let e = per.entry(i.destination.clone()).or_default();
        match i.state.as_str() {
            "SENT" => {
                e.0 += 1;
                e.3 = e.3.max(i.sent_ms);
            }
            "DEAD" => e.2 += 1,
            _ => {
                e.1 += 1;
                if i.not_before_ms > now {
                    e.4 = Some(e.4.map_or(i.not_before_ms, |b| b.max(i.not_before_ms)));
                }
            }
        }
    }
    let dests: String = per
        .iter()
        .map(|(name, (sent, pending, dead, last, backoff))| {
            let conf = c.settings.destinations.iter().find(|d| &d.name == name);
            format!(
                "<tr><td>{n}</td><td>{addr}</td><td>{sent}</td><td>{pending}</td><td>{dead}</td><td>{last}</td><td>{bo}</td>\
                 <td><button data-post=\"/api/destinations/{n}/echo\">Test (C-ECHO)</button></td></tr>",
                n = esc(name),
                addr = conf.map(|d| esc(&format!("{}@{}:{}", d.ae_title, d.host, d.port))).unwrap_or_else(|| "(no longer configured)".into()),
                last = when(*last),
                bo = backoff.map(|b| format!("retrying after {}", when(Some(b)))).unwrap_or_else(|| "–".into()),
            )
        })
        .collect();
    let rows: String = items
        .iter()
        .map(|d| delivery_row(&serde_json::to_value(d).unwrap_or_default()))
        .collect();
    let body = format!(
        "<h1>Outbox</h1><table class=\"list\"><thead><tr><th>Destination</th><th>Address</th><th>Sent</th><th>Pending</th>\
         <th>Dead</th><th>Last success</th><th>Backoff</th><th></th></tr></thead><tbody>{}</tbody></table>\
         <h2>Deliveries</h2><table class=\"list\">{DELIVERY_HEAD}<tbody>{rows}</tbody></table>",
        if dests.is_empty() { "<tr><td colspan=\"8\">No destination configured: results are kept locally.</td></tr>".to_string() } else { dests }
    );
    page(&c, "Outbox", "/outbox", &body)
}

pub async fn rules(State(c): State<Console>) -> Response {
    let rows: String = c
        .settings
        .rules
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&r.name),
                esc(&r.pipelines.join(", ")),
                esc(&if r.destinations.is_empty() {
                    "(kept locally)".to_string()
                } else {
                    r.destinations.join(", ")
                }),
                esc(&format!("{:?}", r.matcher))
            )
        })
        .collect();
    let body = format!(
        "<h1>Rules</h1><table class=\"list\"><thead><tr><th>Rule</th><th>Pipelines</th><th>Destinations</th>\
         <th>Conditions</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>Rule tester</h2><p>Choose one DICOM file of a series: which rules it would hit.</p>\
         <input type=\"file\" id=\"rule-file\"> <pre id=\"rule-result\"></pre>"
    );
    page(&c, "Rules", "/rules", &body)
}

pub async fn login_form(State(c): State<Console>) -> Response {
    page(
        &c,
        "Admin login",
        "",
        "<h1>Admin login</h1><p>The token is in the file named by <code>http.admin_token_file</code> \
         (default <code>data/admin-token</code>).</p>\
         <form method=\"post\" action=\"/login\"><input type=\"password\" name=\"token\" id=\"token\" \
         autocomplete=\"off\" placeholder=\"admin token\"> <button id=\"login\">Log in</button></form>\
         <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(State(c): State<Console>, Form(f): Form<LoginForm>) -> Response {
    let ok = c.token.as_ref().is_some_and(|t| t.verify(&f.token));
    if !ok {
        tracing::warn!("console: admin login refused (wrong token)");
        let mut r = page(&c, "Admin login", "", "<h1>Admin login</h1><p class=\"bad\">Wrong token.</p><p><a href=\"/login\">Try again</a></p>");
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    tracing::info!("console: admin logged in");
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        f.token.trim()
    )
    .parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn logout(headers: HeaderMap) -> Response {
    let _ = guard::cookie(&headers, COOKIE);
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0").parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
