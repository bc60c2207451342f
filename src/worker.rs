//! Workers: claim jobs from the queue, run the pipeline off the async runtime, write the result object
//! durably into the outbox folder and complete the job together with its deliveries.
//!
//! In `segnode serve` they run in-process; `segnode worker` runs only them (another machine, same
//! database and storage). Each pipeline gets `workers.concurrency[pipeline]` slots (default 1). A claimed
//! job's lease is renewed while it runs; a worker that dies leaves a lease that expires, and another
//! worker takes the job again. Completion is conditional on still owning the lease, so a job is never
//! completed twice.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::config::Settings;
use crate::pipeline::registry::{Pipeline, NOOP};
use crate::readahead::ReadAheadCache;
use crate::store::files::sync_dir;
use segnode_db::jobs::{Job, Queue};
use segnode_db::outbox::NewDelivery;
use segnode_db::{Index, Topic};
use segnode_imaging::result::{build_forms, ResultObject, ResultOptions, FORMS};
use segnode_imaging::segment::Segmenter;
use segnode_imaging::volume::{load_series, load_series_with, LoadOptions, PreparedSlice};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Failed(String),
}

/// The pipelines this process runs: `workers.pipelines`, or else every pipeline the rules name.
pub fn configured_pipelines(settings: &Settings) -> Vec<String> {
    if !settings.workers.pipelines.is_empty() {
        return settings.workers.pipelines.clone();
    }
    let mut out: Vec<String> = Vec::new();
    for r in &settings.rules {
        for p in &r.pipelines {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// The worker pool of one process.
pub struct Workers {
    pub index: Index,
    pub settings: Arc<Settings>,
    pub store_root: PathBuf,
    /// The running configuration after reloads (destinations and result forms, `[results]`); None: the
    /// configuration of the start.
    pub live: Option<tokio::sync::watch::Receiver<Arc<Settings>>>,
    /// Slices this process read while the series arrived (`serve` with in-process workers).
    pub read_ahead: Option<Arc<ReadAheadCache>>,
}

/// The external models' work folder (beside the outbox, on the shared storage).
fn work_root(settings: &Settings) -> PathBuf {
    settings
        .dispatch
        .outbox_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join("work")
}

/// Remove work folders that no running job can own any more: older than twice the longest external
/// model timeout (a model is killed at its timeout) and at least a day. Left behind by a worker that
/// was killed mid-job. Returns how many were removed.
pub fn sweep_stale_work(settings: &Settings) -> usize {
    let longest = settings
        .pipelines
        .external
        .values()
        .map(|e| e.timeout_s)
        .fold(0.0f64, f64::max);
    let age = Duration::from_secs_f64((2.0 * longest).max(86_400.0));
    let Ok(entries) = std::fs::read_dir(work_root(settings)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > age);
        if old && e.path().is_dir() && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl Workers {
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let settings = self.settings.clone();
        if let Ok(n) = tokio::task::spawn_blocking(move || sweep_stale_work(&settings)).await {
            if n > 0 {
                info!(folders = n, "stale work folders of killed jobs removed");
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let node = self.settings.node_name();
        for pipeline in configured_pipelines(&self.settings) {
            let slots = self
                .settings
                .workers
                .concurrency
                .get(&pipeline)
                .copied()
                .unwrap_or(1);
            for slot in 0..slots {
                let owner = format!(
                    "{node}/{}/{pipeline}#{slot}/{}",
                    std::process::id(),
                    segnode_db::new_id()
                );
                tasks.spawn(
                    self.clone()
                        .slot_loop(pipeline.clone(), owner, shutdown.clone()),
                );
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn slot_loop(
        self: Arc<Self>,
        pipeline: String,
        owner: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let queue = Queue::new(self.index.clone());
        let lease_ms = (self.settings.workers.lease_s * 1000.0) as i64;
        let poll = Duration::from_millis(self.settings.workers.poll_ms);
        let pipelines = vec![pipeline.clone()];
        let mut wake = self.index.wakeups().subscribe(Topic::Jobs);
        loop {
            if *shutdown.borrow() {
                return;
            }
            wake.arm();
            if crate::control::paused(crate::control::Activity::Processing) {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            match queue.claim(&pipelines, &owner, lease_ms).await {
                Ok(Some(job)) => {
                    self.run_job(&queue, job, &owner).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot claim jobs"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = wake.wait(poll) => {}
            }
        }
    }

    async fn run_job(&self, queue: &Queue, job: Job, owner: &str) {
        let span = tracing::info_span!("job", id = %job.id, pipeline = %job.pipeline, series = %job.series_uid, attempt = job.attempts);
        async {
            let started = Instant::now();
            let _ = self
                .index
                .add_event(&job.series_uid, job.revision, "job", &format!("{} started (job {}, attempt {})", job.pipeline, job.id, job.attempts))
                .await;
            // keep the lease while the pipeline runs
            let lease_ms = (self.settings.workers.lease_s * 1000.0) as i64;
            let renew = {
                let (q, id, owner) = (queue.clone(), job.id.clone(), owner.to_string());
                tokio::spawn(async move {
                    let every = Duration::from_millis((lease_ms / 3).max(50) as u64);
                    loop {
                        tokio::time::sleep(every).await;
                        match q.renew(&id, &owner, lease_ms).await {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => warn!(error = %e, "lease renewal failed"),
                        }
                    }
                })
            };
            let outcome = self.execute(&job).await;
            renew.abort();
            let ms = started.elapsed().as_millis() as u64;
            match outcome {
                Ok((mut summary, deliveries)) => {
                    summary["total_ms"] = json!(ms);
                    summary["worker"] = json!(owner);
                    let text = summary.to_string();
                    match queue.complete(&job, owner, &text, &deliveries).await {
                        Ok(true) => {
                            let status = summary["status"].as_str().unwrap_or("done").to_string();
                            info!(ms, status = %status, deliveries = deliveries.len(), "job done");
                            crate::metrics::metrics().job(&job.pipeline, true, ms as f64 / 1000.0);
                            let to: Vec<&str> = deliveries.iter().map(|d| d.destination.as_str()).collect();
                            let detail = if deliveries.is_empty() {
                                format!("{} done in {ms} ms: {status}", job.pipeline)
                            } else {
                                format!("{} done in {ms} ms: {status}; result queued for {}", job.pipeline, to.join(", "))
                            };
                            let _ = self.index.add_event(&job.series_uid, job.revision, "job", &detail).await;
                        }
                        Ok(false) => warn!("lease lost while running: the result is discarded (another worker owns the job)"),
                        Err(e) => warn!(error = %e, "cannot record the job's completion"),
                    }
                }
                Err(JobError::Failed(reason)) => {
                    let w = &self.settings.workers;
                    match queue.fail(&job, owner, &reason, w.max_attempts, w.retry_base_s, w.retry_max_s).await {
                        Ok(Some(state)) => {
                            warn!(ms, state = state.as_str(), reason = %reason, "job failed");
                            crate::metrics::metrics().job(&job.pipeline, false, 0.0);
                            let _ = self
                                .index
                                .add_event(&job.series_uid, job.revision, "job", &format!("{} failed (attempt {}, now {state}): {reason}", job.pipeline, job.attempts))
                                .await;
                        }
                        Ok(None) => warn!("lease lost while running"),
                        Err(e) => warn!(error = %e, "cannot record the job's failure"),
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Load, segment, write the result. Returns the job summary and the deliveries to queue.
    async fn execute(&self, job: &Job) -> Result<(serde_json::Value, Vec<NewDelivery>), JobError> {
        let fail = |m: String| JobError::Failed(m);
        if job.pipeline == NOOP {
            return Ok((
                json!({ "pipeline": NOOP, "status": "noop: nothing run" }),
                Vec::new(),
            ));
        }
        let rel = self
            .index
            .series_dir(&job.series_uid)
            .await
            .map_err(|e| fail(format!("index: {e}")))?
            .ok_or_else(|| fail("the series has no stored instances".into()))?;
        let dir = self.store_root.join(rel);
        let settings = self
            .live
            .as_ref()
            .map_or_else(|| self.settings.clone(), |l| l.borrow().clone());
        let companions = self.companion_dirs(&settings, job).await?;
        let job2 = job.clone();
        let ahead = self
            .read_ahead
            .as_ref()
            .map(|r| r.take(&job.series_uid))
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            run_pipeline(&settings, &job2, &dir, &ahead, &companions)
        })
        .await
        .map_err(|e| fail(format!("pipeline crashed: {e}")))?
    }

    /// For an `onnx:` model whose channels take other series of the study (`input.channels.series`):
    /// the folder of the newest complete series of the study whose SeriesDescription holds each
    /// fragment. A study whose other series has not arrived (or not completed) yet fails the attempt
    /// with the reason, and the job is retried with the usual backoff.
    async fn companion_dirs(
        &self,
        settings: &Settings,
        job: &Job,
    ) -> Result<Vec<(String, PathBuf)>, JobError> {
        let Some(name) = job
            .pipeline
            .strip_prefix(crate::pipeline::registry::ONNX_PREFIX)
        else {
            return Ok(Vec::new());
        };
        let Some(onnx) = settings.pipelines.onnx.get(name) else {
            return Ok(Vec::new());
        };
        let manifest = segnode_onnx::Manifest::load(&onnx.manifest)
            .map_err(|e| JobError::Failed(format!("{}: {e}", job.pipeline)))?;
        let fragments = manifest.companion_series();
        if fragments.is_empty() {
            return Ok(Vec::new());
        }
        let study = self
            .index
            .study_series_of(&job.series_uid)
            .await
            .map_err(|e| JobError::Failed(format!("index: {e}")))?;
        let mut out = Vec::new();
        for fragment in fragments {
            let want = fragment.to_lowercase();
            let found = study.iter().find(|s| {
                s.series_uid != job.series_uid
                    && s.state == segnode_db::SeriesState::Complete
                    && s.series_description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(&want))
            });
            let Some(series) = found else {
                return Err(JobError::Failed(format!(
                    "{} takes the study's series described {fragment:?} as a channel; none of the \
                     study's {} series is complete with that description yet",
                    job.pipeline,
                    study.len()
                )));
            };
            let rel = self
                .index
                .series_dir(&series.series_uid)
                .await
                .map_err(|e| JobError::Failed(format!("index: {e}")))?
                .ok_or_else(|| {
                    JobError::Failed(format!(
                        "series {} has no stored instances",
                        series.series_uid
                    ))
                })?;
            out.push((fragment.to_string(), self.store_root.join(rel)));
        }
        Ok(out)
    }
}

/// The CPU-bound part of a job (runs on a blocking thread).
fn run_pipeline(
    settings: &Settings,
    job: &Job,
    dir: &Path,
    ahead: &HashMap<PathBuf, Arc<PreparedSlice>>,
    companions: &[(String, PathBuf)],
) -> Result<(serde_json::Value, Vec<NewDelivery>), JobError> {
    let fail = |m: String| JobError::Failed(m);
    let registry = settings.pipelines.registry();
    let segmenter: Box<dyn Segmenter> = match registry.parse(&job.pipeline) {
        Ok(Pipeline::Onnx(name)) if !companions.is_empty() => {
            let mut loaded = Vec::with_capacity(companions.len());
            for (fragment, dir) in companions {
                let v = load_series(dir, &LoadOptions::default())
                    .map_err(|e| fail(format!("loading the study's {fragment:?} series: {e}")))?;
                loaded.push((fragment.clone(), v));
            }
            Box::new(
                settings.pipelines.onnx[name]
                    .segmenter(name)
                    .with_companions(loaded),
            )
        }
        _ => registry
            .segmenter(&job.pipeline, &work_root(settings))
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("{} has no segmenter", job.pipeline)))?,
    };
    let t0 = Instant::now();
    let (volume, read_ahead) = load_series_with(dir, &LoadOptions::default(), ahead)
        .map_err(|e| fail(format!("loading the series: {e}")))?;
    let load_ms = t0.elapsed().as_millis() as u64;
    crate::metrics::metrics()
        .read_ahead_load(read_ahead, volume.slices.len().saturating_sub(read_ahead));
    let t1 = Instant::now();
    let seg = segmenter
        .segment(&volume)
        .map_err(|e| fail(e.to_string()))?;
    let segment_ms = t1.elapsed().as_millis() as u64;
    let segments: Vec<serde_json::Value> = seg
        .segments
        .iter()
        .map(|s| {
            let m: serde_json::Map<String, serde_json::Value> = s
                .measurements
                .iter()
                .map(|m| {
                    (
                        format!("{} ({})", m.name, m.unit),
                        json!((m.value * 100.0).round() / 100.0),
                    )
                })
                .collect();
            json!({ "number": s.number, "label": s.description.label, "measurements": m })
        })
        .collect();
    let mut summary = json!({
        "pipeline": job.pipeline,
        "version": segmenter.version(),
        "slices": volume.shape()[0],
        "dropped_slices": volume.dropped.len(),
        "load_ms": load_ms,
        "segment_ms": segment_ms,
        "slices_read_ahead": read_ahead,
        "segments": segments,
        "notes": seg.notes,
    });
    if let Some(details) = &seg.details {
        summary["details"] = details.clone();
    }
    if seg.is_empty() {
        summary["status"] = json!(segmenter.nothing_found());
        return Ok((summary, Vec::new()));
    }
    let t2 = Instant::now();
    // the SEG always (kept in the outbox: the canonical result), and every form a destination takes
    let destinations = job.destination_list();
    let takes = |dest: &str, form: &str| {
        settings
            .destinations
            .iter()
            .find(|d| d.name == dest)
            .map_or(form == "seg", |d| d.results.iter().any(|r| r == form))
    };
    let wanted: Vec<&str> = FORMS
        .iter()
        .copied()
        .filter(|f| *f == "seg" || destinations.iter().any(|d| takes(d, f)))
        .collect();
    let window = segmenter.display_window();
    let built = build_forms(&wanted, &volume, &seg, |f| {
        let (series_number, series_description) = settings.results.series_of(f, &job.pipeline);
        ResultOptions {
            series_number,
            series_description,
            window,
            note: settings.results.note.clone(),
            ..ResultOptions::default()
        }
    })
    .map_err(|e| fail(e.to_string()))?;
    let mut deliveries = Vec::new();
    let mut forms = serde_json::Map::new();
    for (form, objects) in built {
        forms.insert(form.to_string(), json!(objects.len()));
        for obj in objects {
            let name = format!("{}.dcm", obj.sop_instance_uid);
            write_outbox_file(&settings.dispatch.outbox_dir, &name, &obj).map_err(fail)?;
            if form == "seg" {
                summary["seg_sop_instance_uid"] = json!(obj.sop_instance_uid);
                summary["seg_series_instance_uid"] = json!(obj.series_instance_uid);
                summary["frames"] = obj.summary["frames"].clone();
            }
            deliveries.extend(destinations.iter().filter(|d| takes(d, form)).map(|d| {
                NewDelivery {
                    destination: d.clone(),
                    path: name.clone(),
                    sop_class_uid: obj.sop_class_uid.clone(),
                    sop_instance_uid: obj.sop_instance_uid.clone(),
                }
            }));
        }
    }
    summary["forms"] = json!(forms);
    summary["write_ms"] = json!(t2.elapsed().as_millis() as u64);
    summary["status"] = json!("ok");
    Ok((summary, deliveries))
}

/// Write a result durably into the outbox folder: temporary name, fsync, rename, directory fsync.
fn write_outbox_file(outbox: &Path, name: &str, obj: &ResultObject) -> Result<(), String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("outbox {what}: {e}");
    std::fs::create_dir_all(outbox).map_err(|e| err("folder", &e))?;
    let tmp = outbox.join(format!(".{name}.part"));
    obj.write(&tmp).map_err(|e| err("write", &e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err("fsync", &e))?;
    std::fs::rename(&tmp, outbox.join(name)).map_err(|e| err("rename", &e))?;
    sync_dir(outbox).map_err(|e| err("fsync", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_runs_its_own_pipelines_or_those_of_the_rules() {
        let rules = "[[rules]]\nname = \"a\"\npipelines = [\"lung\", \"noop\"]\n[[rules]]\nname = \"b\"\npipelines = [\"cochlear\", \"lung\"]\n";
        let all = Settings::load_from_str_for_tests(rules);
        assert_eq!(configured_pipelines(&all), ["lung", "noop", "cochlear"]);
        let gpu = Settings::load_from_str_for_tests(&format!(
            "[workers]\nenabled = true\npipelines = [\"noop\"]\n{rules}"
        ));
        assert_eq!(configured_pipelines(&gpu), ["noop"]);
        assert!(gpu.validate().is_ok());
        let typo = Settings::load_from_str_for_tests(&format!(
            "[workers]\nenabled = true\npipelines = [\"lungs\"]\n{rules}"
        ));
        let err = typo.validate().unwrap_err().to_string();
        assert!(
            err.contains("workers.pipelines") && err.contains("lungs"),
            "{err}"
        );
    }

    #[test]
    fn only_stale_work_folders_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load_from_str_for_tests("");
        settings.dispatch.outbox_dir = dir.path().join("outbox");
        let work = dir.path().join("work");
        let (old, fresh) = (work.join("ext-old"), work.join("ext-running"));
        for d in [&old, &fresh] {
            std::fs::create_dir_all(d.join("input")).unwrap();
        }
        let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
        std::fs::File::open(&old)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        assert_eq!(sweep_stale_work(&settings), 1);
        assert!(!old.exists());
        assert!(fresh.exists(), "a folder a running job may own is kept");
    }
}
