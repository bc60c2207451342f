//! The JSON API under `/api` (the same records the CLI prints with `--json`), the viewer's PNG planes,
//! and the admin actions. Every action is a POST (the guard has checked the token) and is recorded in
//! the series history as an `admin` event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use segnode_db::jobs::{Job, Queue};
use segnode_db::outbox::Outbox;
use segnode_db::series::SeriesRecord;
use segnode_db::IndexError;

use super::state::Console;
use crate::control::{self, Activity};
use crate::view::render::{Plane, Window};
use crate::view::{ViewData, ViewError, ViewKey};

/// An API failure, answered as `{"error": …}` with a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("index database: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Request(m) => ApiError::BadRequest(m),
            ViewError::Load(m) => ApiError::Unavailable(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match &self {
            ApiError::Index(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
        };
        (code, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Filters of `/api/series` (all optional; text matches are case-insensitive substrings).
#[derive(Debug, Default, Deserialize)]
pub struct SeriesFilter {
    pub state: Option<String>,
    pub modality: Option<String>,
    /// Calling AE title.
    pub ae: Option<String>,
    /// Series UID or patient ID.
    pub q: Option<String>,
    /// Received on or after this day (YYYY-MM-DD, UTC).
    pub since: Option<String>,
    /// Add each series' pipelines (with their job states) and delivery states (the console's list).
    pub summary: Option<bool>,
}

fn contains(hay: Option<&str>, needle: &Option<String>) -> bool {
    match needle.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        None => true,
        Some(n) => hay.is_some_and(|h| h.to_lowercase().contains(&n.to_lowercase())),
    }
}

/// Days since the epoch of `YYYY-MM-DD` (civil calendar), as ms.
fn day_ms(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

impl SeriesFilter {
    pub fn keep(&self, s: &SeriesRecord) -> bool {
        let since = self.since.as_deref().and_then(day_ms);
        contains(Some(s.state.as_str()), &self.state)
            && contains(s.modality.as_deref(), &self.modality)
            && contains(s.calling_ae.as_deref(), &self.ae)
            && (contains(Some(&s.series_uid), &self.q)
                || contains(s.patient_id.as_deref(), &self.q))
            && since.is_none_or(|t| s.last_received_ms >= t)
    }
}

/// Series, newest first, filtered.
pub async fn series_rows(c: &Console, f: &SeriesFilter) -> ApiResult<Vec<SeriesRecord>> {
    Ok(c.index
        .list_series()
        .await?
        .into_iter()
        .filter(|s| f.keep(s))
        .collect())
}

/// The series rows as JSON; with `summary`, each also has `pipelines` (e.g. `["lung DONE"]`) and
/// `deliveries` (state → count) of its current revision.
pub async fn series_values(c: &Console, f: &SeriesFilter) -> ApiResult<Vec<Value>> {
    let rows = series_rows(c, f).await?;
    let mut out: Vec<Value> = rows
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    if f.summary == Some(true) {
        let jobs = Queue::new(c.index.clone()).list(None).await?;
        let items = Outbox::new(c.index.clone()).list().await?;
        for (v, s) in out.iter_mut().zip(rows.iter()) {
            let pipelines: Vec<String> = jobs
                .iter()
                .filter(|j| j.series_uid == s.series_uid && j.revision == s.revision)
                .map(|j| format!("{} {}", j.pipeline, j.state))
                .collect();
            let mut deliveries: BTreeMap<String, usize> = BTreeMap::new();
            for d in items
                .iter()
                .filter(|d| d.series_uid == s.series_uid && d.revision == s.revision)
            {
                *deliveries.entry(d.state.as_str().to_string()).or_default() += 1;
            }
            v["pipelines"] = json!(pipelines);
            v["deliveries"] = json!(deliveries);
        }
    }
    Ok(out)
}

pub async fn series_list(
    State(c): State<Console>,
    Query(f): Query<SeriesFilter>,
) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(series_values(&c, &f).await?))
}

/// One series: the record, its history, instances, jobs and deliveries.
pub async fn series_detail(c: &Console, uid: &str) -> ApiResult<Value> {
    let series = c
        .index
        .list_series()
        .await?
        .into_iter()
        .find(|s| s.series_uid == uid)
        .ok_or_else(|| ApiError::NotFound(format!("no series {uid}")))?;
    let history = c.index.series_events(uid).await?;
    let instances = c.index.series_instances(uid).await?;
    let jobs = Queue::new(c.index.clone()).list(Some(uid)).await?;
    let deliveries: Vec<_> = Outbox::new(c.index.clone())
        .list()
        .await?
        .into_iter()
        .filter(|d| d.series_uid == uid)
        .collect();
    let results: Vec<Value> = jobs
        .iter()
        .filter_map(|j| {
            j.result
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
                .map(|r| json!({ "job": j.id, "pipeline": j.pipeline, "revision": j.revision, "result": r }))
        })
        .collect();
    Ok(json!({
        "series": series,
        "history": history,
        "instances": instances,
        "jobs": jobs,
        "results": results,
        "deliveries": deliveries,
    }))
}

pub async fn series_show(
    State(c): State<Console>,
    Path(uid): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(series_detail(&c, &uid).await?))
}

pub async fn jobs_list(State(c): State<Console>) -> ApiResult<Json<Vec<Job>>> {
    let mut jobs = Queue::new(c.index.clone()).list(None).await?;
    // failures first, then newest first (the list is newest first already)
    jobs.sort_by_key(|j| !matches!(j.state.as_str(), "FAILED" | "DEAD"));
    Ok(Json(jobs))
}

pub async fn job_show(State(c): State<Console>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Queue::new(c.index.clone())
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

pub async fn outbox_list(State(c): State<Console>) -> ApiResult<Json<Value>> {
    let items = Outbox::new(c.index.clone()).list().await?;
    Ok(Json(json!(items)))
}

/// Status: this process, the database's counts, disk, the last errors.
pub async fn status_value(c: &Console) -> Value {
    let counts = if c.index.unavailable() {
        None
    } else {
        tokio::time::timeout(Duration::from_secs(3), c.index.state_counts())
            .await
            .ok()
            .and_then(Result::ok)
    };
    let disk = crate::store::files::disk_mb(&c.store_root);
    let errors: Vec<Value> = match Queue::new(c.index.clone()).list(None).await {
        Ok(jobs) => jobs
            .into_iter()
            .filter(|j| j.error.is_some())
            .take(5)
            .map(|j| json!({ "what": format!("job {} ({})", j.id, j.pipeline), "series_uid": j.series_uid, "error": j.error, "state": j.state }))
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut delivery_errors: Vec<Value> = match Outbox::new(c.index.clone()).list().await {
        Ok(items) => items
            .into_iter()
            .filter(|d| d.error.is_some())
            .take(5)
            .map(|d| json!({ "what": format!("delivery {} to {}", d.id, d.destination), "series_uid": d.series_uid, "error": d.error, "state": d.state }))
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut last_errors = errors;
    last_errors.append(&mut delivery_errors);
    let s = &c.settings;
    // every process on this database, from their heartbeats
    let fresh = 3 * segnode_db::nodes::HEARTBEAT_MS;
    let now = segnode_db::now_ms();
    let nodes: Vec<Value> = c
        .index
        .nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            json!({ "name": n.name, "role": n.role, "version": n.version, "pid": n.pid,
                    "started_ms": n.started_ms, "seen_ms": n.seen_ms,
                    "up": now - n.seen_ms <= fresh, "this": n.name == c.node })
        })
        .collect();
    json!({
        "node": c.node,
        "nodes": nodes,
        "version": env!("CARGO_PKG_VERSION"),
        "started_ms": c.started_ms,
        "database": { "backend": format!("{:?}", c.index.backend()), "up": counts.is_some() },
        "listeners": [{ "ae_title": s.dicom.ae_title, "bind": s.dicom.bind, "port": s.dicom.port }],
        "workers": { "enabled": s.workers.enabled, "pipelines": crate::worker::configured_pipelines(s),
                     "paused": control::paused(Activity::Processing) },
        "dispatcher": { "destinations": s.destinations.iter().map(|d| &d.name).collect::<Vec<_>>(),
                        "paused": control::paused(Activity::Delivery) },
        "disk": disk.map(|(free, total)| json!({ "free_mb": free, "total_mb": total,
                     "min_free_mb": s.storage.min_free_mb, "low": free < s.storage.min_free_mb })),
        "series": counts.as_ref().and_then(|c| c.get("series")),
        "jobs": counts.as_ref().and_then(|c| c.get("jobs")),
        "outbox": counts.as_ref().and_then(|c| c.get("outbox")),
        "last_errors": last_errors,
        "certificates": s.certificates().into_iter().map(|(what, not_after)| {
            let days = not_after.map(crate::config::days_left);
            json!({ "certificate": what, "days_left": days.map(|d| d.floor()),
                    "warning": days.is_some_and(|d| d < 30.0) })
        }).collect::<Vec<_>>(),
    })
}

pub async fn status(State(c): State<Console>) -> Json<Value> {
    Json(status_value(&c).await)
}

/// The rules as configured.
pub async fn rules(State(c): State<Console>) -> Json<Value> {
    let rules: Vec<Value> = c
        .settings
        .rules
        .iter()
        .map(|r| {
            json!({ "name": r.name, "pipelines": r.pipelines, "destinations": r.destinations,
                         "match": format!("{:?}", r.matcher) })
        })
        .collect();
    Json(json!(rules))
}

// --- the viewer ---------------------------------------------------------------------------------

/// The series folder, and the latest result's SEG (job id, path) of the series' current revision.
async fn view_source(c: &Console, uid: &str) -> ApiResult<(ViewKey, PathBuf, Option<PathBuf>)> {
    let series = c
        .index
        .list_series()
        .await?
        .into_iter()
        .find(|s| s.series_uid == uid)
        .ok_or_else(|| ApiError::NotFound(format!("no series {uid}")))?;
    let rel = c
        .index
        .series_dir(uid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("series {uid} has no stored instances")))?;
    let jobs = Queue::new(c.index.clone()).list(Some(uid)).await?;
    // newest first: the latest job that wrote a SEG
    let seg_uid = jobs
        .iter()
        .filter(|j| j.state.as_str() == "DONE")
        .filter_map(|j| j.result.as_deref())
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .find_map(|r| r["seg_sop_instance_uid"].as_str().map(str::to_string));
    let seg = seg_uid
        .as_ref()
        .map(|u| c.settings.dispatch.outbox_dir.join(format!("{u}.dcm")));
    Ok((
        ViewKey {
            series_uid: uid.to_string(),
            revision: series.revision,
            seg_uid: seg_uid.unwrap_or_default(),
        },
        c.store_root.join(rel),
        seg,
    ))
}

/// The loaded view of a series (on a blocking thread; cached).
pub async fn load_view(c: &Console, uid: &str) -> ApiResult<(ViewKey, Arc<ViewData>)> {
    let (key, dir, seg) = view_source(c, uid).await?;
    let views = c.views.clone();
    let k = key.clone();
    let data = tokio::task::spawn_blocking(move || views.view(&k, &dir, seg))
        .await
        .map_err(|e| ApiError::Unavailable(format!("viewer crashed: {e}")))??;
    Ok((key, data))
}

/// `/api/series/{uid}/view`: shape, segments, attributes, overlay state.
pub async fn view_info(
    State(c): State<Console>,
    Path(uid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (key, v) = load_view(&c, &uid).await?;
    let [nk, nj, ni] = v.volume.shape();
    let segments: Vec<Value> = v
        .segments()
        .iter()
        .map(|s| {
            let [r, g, b] = crate::view::render::segment_color(s.number);
            json!({ "number": s.number, "label": s.label, "color": format!("#{r:02x}{g:02x}{b:02x}") })
        })
        .collect();
    Ok(Json(json!({
        "series_uid": key.series_uid,
        "revision": key.revision,
        "seg_sop_instance_uid": key.seg_uid,
        "planes": { "axial": nk, "coronal": nj, "sagittal": ni },
        "segments": segments,
        "overlay_problem": v.overlay_problem,
        "attributes": v.attributes.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "windows": crate::view::render::WINDOWS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    })))
}

/// Query of the image endpoint.
#[derive(Debug, Deserialize)]
pub struct ImageQuery {
    pub plane: Option<String>,
    pub index: Option<usize>,
    pub overlay: Option<bool>,
    pub window: Option<String>,
    /// Comma-separated segment numbers to outline (default: all).
    pub segments: Option<String>,
}

/// `/api/series/{uid}/image`: a PNG plane.
pub async fn image(
    State(c): State<Console>,
    Path(uid): Path<String>,
    Query(q): Query<ImageQuery>,
) -> ApiResult<Response> {
    let plane = Plane::parse(q.plane.as_deref().unwrap_or("axial"))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let window_name = q.window.as_deref().unwrap_or("lung");
    let window = Window::parse(window_name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let overlay = q.overlay.unwrap_or(true);
    let segments: Option<Vec<u8>> = match q.segments.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(Vec::new()),
        Some(list) => Some(
            list.split(',')
                .map(|s| s.trim().parse::<u8>())
                .collect::<Result<_, _>>()
                .map_err(|_| ApiError::BadRequest("segments: comma-separated numbers".into()))?,
        ),
    };
    let (key, view) = load_view(&c, &uid).await?;
    let count = plane.count(view.volume.shape());
    let index = q.index.unwrap_or(count / 2);
    let cache_key = format!(
        "{}|{}|{}|{}|{index}|{window_name}|{overlay}|{:?}",
        key.series_uid,
        key.revision,
        key.seg_uid,
        plane.name(),
        segments
    );
    let png = match c.views.png(&cache_key) {
        Some(p) => p,
        None => {
            let v = view.clone();
            let png = tokio::task::spawn_blocking(move || {
                v.png(plane, Some(index), window, overlay, segments.as_deref())
            })
            .await
            .map_err(|e| ApiError::Unavailable(format!("renderer crashed: {e}")))??;
            let png = Arc::new(png);
            c.views.keep_png(cache_key, png.clone());
            png
        }
    };
    Ok(([(header::CONTENT_TYPE, "image/png")], png.as_ref().clone()).into_response())
}

// --- actions (POST; the guard checked the admin token) ------------------------------------------

async fn admin_event(c: &Console, series_uid: &str, revision: i64, what: &str) {
    let _ = c
        .index
        .add_event(series_uid, revision, "admin", &format!("{what} (console)"))
        .await;
}

pub async fn retry_job(State(c): State<Console>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let queue = Queue::new(c.index.clone());
    let job = queue
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    if !queue.retry(&id).await? {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}: only FAILED or DEAD jobs are retried",
            job.state
        )));
    }
    admin_event(
        &c,
        &job.series_uid,
        job.revision,
        &format!("job {id} ({}) retried", job.pipeline),
    )
    .await;
    Ok(Json(json!({ "job": id, "state": "QUEUED" })))
}

pub async fn resend_delivery(
    State(c): State<Console>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let outbox = Outbox::new(c.index.clone());
    let item = outbox
        .list()
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no delivery {id}")))?;
    let queued = outbox
        .resend(&id)
        .await
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    if !queued {
        return Err(ApiError::Conflict(format!(
            "delivery {id} is {}: only DEAD or SENT deliveries are resent",
            item.state
        )));
    }
    admin_event(
        &c,
        &item.series_uid,
        item.revision,
        &format!("delivery {id} to {} resent", item.destination),
    )
    .await;
    Ok(Json(json!({ "delivery": id, "state": "PENDING" })))
}

pub async fn force_complete(
    State(c): State<Console>,
    Path(uid): Path<String>,
) -> ApiResult<Json<Value>> {
    let series = c
        .index
        .list_series()
        .await?
        .into_iter()
        .find(|s| s.series_uid == uid)
        .ok_or_else(|| ApiError::NotFound(format!("no series {uid}")))?;
    if series.state.as_str() != "RECEIVING" {
        return Err(ApiError::Conflict(format!(
            "series {uid} is {} already",
            series.state
        )));
    }
    if !c
        .index
        .complete_series(
            &series,
            "forced complete by an administrator (console)",
            false,
        )
        .await?
    {
        return Err(ApiError::Conflict(
            "the series changed meanwhile (a new instance): try again".into(),
        ));
    }
    crate::metrics::metrics().series_completed(
        "forced",
        (segnode_db::now_ms() - series.last_received_ms) as f64 / 1000.0,
    );
    Ok(Json(json!({ "series": uid, "state": "COMPLETE" })))
}

/// `/api/reload`: read the configuration again (rules, destinations, callers, results); a bad file is
/// refused with the key named and the running configuration stays.
pub async fn reload(State(c): State<Console>) -> ApiResult<Json<Value>> {
    let live = c
        .live
        .clone()
        .ok_or_else(|| ApiError::NotFound("this process cannot reload".into()))?;
    let outcome = tokio::task::spawn_blocking(move || live.reload())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    tracing::info!(node = %c.node, ok = outcome.is_ok(), "console: configuration reload");
    Ok(Json(match outcome {
        Ok(r) => json!({ "ok": true, "applied": r.applied, "need_restart": r.need_restart }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }))
}

/// `/api/pause/{what}` and `/api/resume/{what}` (processing | delivery).
pub async fn pause(State(c): State<Console>, Path(what): Path<String>) -> ApiResult<Json<Value>> {
    set_pause(&c, &what, true).await
}

pub async fn resume(State(c): State<Console>, Path(what): Path<String>) -> ApiResult<Json<Value>> {
    set_pause(&c, &what, false).await
}

async fn set_pause(c: &Console, what: &str, pause: bool) -> ApiResult<Json<Value>> {
    let activity = Activity::parse(what)
        .ok_or_else(|| ApiError::BadRequest("processing or delivery".into()))?;
    let changed = control::set_paused(activity, pause);
    tracing::info!(node = %c.node, what = activity.name(), paused = pause, "console: {} {}", if pause { "paused" } else { "resumed" }, activity.name());
    Ok(Json(
        json!({ "what": activity.name(), "paused": pause, "changed": changed }),
    ))
}

/// `/api/destinations/{name}/echo`: C-ECHO the destination.
pub async fn echo(State(c): State<Console>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let s = &c.settings;
    let d = s
        .destinations
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no destination {name}")))?;
    let peer = segnode_net::scu::Peer {
        ae_title: d.ae_title.clone(),
        host: d.host.clone(),
        port: d.port,
        calling_ae: d
            .calling_ae
            .clone()
            .unwrap_or_else(|| s.dicom.ae_title.clone()),
    };
    let tls = match d.scu_tls() {
        Ok(t) => t,
        Err(e) => {
            return Ok(Json(
                json!({ "destination": name, "ok": false, "error": format!("TLS configuration: {e}"), "ms": 0 }),
            ))
        }
    };
    let opts = segnode_net::scu::ScuOptions {
        connect_timeout: crate::config::secs(s.dispatch.connect_timeout_s),
        dimse_timeout: crate::config::secs(s.dispatch.dimse_timeout_s),
        max_pdu: s.dicom.max_pdu,
        tls,
    };
    let t = std::time::Instant::now();
    let outcome = segnode_net::scu::echo(&peer, &opts).await;
    let ms = t.elapsed().as_millis() as u64;
    Ok(Json(match outcome {
        Ok(status) => {
            json!({ "destination": name, "ok": status == 0, "status": format!("{status:04X}"), "ms": ms })
        }
        Err(e) => json!({ "destination": name, "ok": false, "error": e.to_string(), "ms": ms }),
    }))
}

/// `/api/rules/test`: the body is one DICOM file; which rules its series would hit, and why not.
pub async fn rules_test(State(c): State<Console>, body: Bytes) -> ApiResult<Json<Value>> {
    let router = c
        .settings
        .router()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let tmp = std::env::temp_dir().join(format!("segnode-rule-test-{}.dcm", segnode_db::new_id()));
    std::fs::write(&tmp, &body).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let header = crate::store::header::read_header(&tmp);
    let _ = std::fs::remove_file(&tmp);
    let h = header.map_err(|e| ApiError::BadRequest(format!("not a DICOM file: {e}")))?;
    let facts = crate::routing::SeriesFacts {
        modality: h.modality.clone(),
        body_part: h.body_part.clone(),
        series_description: h.series_description.clone(),
        protocol_name: h.protocol_name.clone(),
        slice_thickness: h.slice_thickness,
        orientation: h.iop,
        // one file: the slice count of the series is unknown; min_slices is shown as not evaluated
        slices: i64::MAX / 2,
        ..Default::default()
    };
    let mut rules = Vec::new();
    for (rule, settings) in router.rules.iter().zip(c.settings.rules.iter()) {
        rules.push(json!({ "rule": rule.name, "matches": rule.matches(&facts),
                           "pipelines": rule.pipelines, "destinations": rule.destinations,
                           "conditions": format!("{:?}", settings.matcher) }));
    }
    let mut f = BTreeMap::new();
    f.insert("modality", json!(facts.modality));
    f.insert("body_part", json!(facts.body_part));
    f.insert("series_description", json!(facts.series_description));
    f.insert("protocol_name", json!(facts.protocol_name));
    f.insert("slice_thickness", json!(facts.slice_thickness));
    f.insert("orientation", json!(facts.orientation));
    Ok(Json(json!({
        "series_uid": h.series_uid,
        "facts": f,
        "note": "slice counts (min_slices / max_slices) and AE titles are not evaluated for one file",
        "rules": rules,
    })))
}
