//! Delivery of results: the outbox (durable, in the index database and the outbox folder) and the
//! dispatcher that sends each item to its destination through the destination's sink (`crate::sink`:
//! C-STORE today).
//!
//! One task per destination, so a destination that is down never delays the others. A failed
//! association backs the whole destination off exponentially (with jitter); a failure status for one
//! object retries that object (Out of Resources) or dead-letters it (any other failure). After
//! `dispatch.max_attempts` an item is DEAD until `segnode outbox resend`. An item is marked SENT as soon as
//! its success response arrives, so a restart never resends what the PACS already acknowledged. A result
//! file is removed `dispatch.keep_sent_h` after the last of its destinations acknowledged it (never
//! while any delivery of it is pending or dead), so a node left running for months does not fill its
//! disk with results.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::config::{DestinationSettings, Settings};
use crate::sink::{self, Answer, Sink, SinkItem};
use segnode_db::outbox::{Delivery, Outbox};
use segnode_db::{backoff_ms, now_ms, Index, IndexError, Topic};

/// Remove the result files whose every delivery was acknowledged before `sent_before_ms` (at most
/// 500 per call), and mark their deliveries purged. Returns how many files were removed.
pub async fn purge_delivered(
    outbox: &Outbox,
    outbox_dir: &std::path::Path,
    sent_before_ms: i64,
) -> Result<usize, IndexError> {
    let mut removed = 0;
    for rel in outbox.purgeable(sent_before_ms).await? {
        // a bare file name written by a worker; anything else is not ours to delete
        if rel.contains('/') || rel.contains('\\') || rel.starts_with('.') {
            continue;
        }
        match std::fs::remove_file(outbox_dir.join(&rel)) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %rel, error = %e, "cannot remove a delivered result");
                continue;
            }
        }
        outbox.mark_purged(&rel).await?;
    }
    Ok(removed)
}

/// The dispatcher: one delivery task per configured destination.
pub struct Dispatcher {
    pub index: Index,
    pub settings: Arc<Settings>,
}

impl Dispatcher {
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for dest in self.settings.destinations.clone() {
            let worker = DestinationWorker {
                outbox: Outbox::new(self.index.clone()),
                index: self.index.clone(),
                settings: self.settings.clone(),
                sink: sink::for_destination(&dest, &self.settings),
                dest,
            };
            let sd = shutdown.clone();
            tasks.spawn(worker.run(sd));
        }
        tasks.spawn(purge_loop(
            Outbox::new(self.index.clone()),
            self.settings.clone(),
            shutdown.clone(),
        ));
        while tasks.join_next().await.is_some() {}
    }
}

/// Remove delivered results once they are `dispatch.keep_sent_h` old (checked every 10 minutes, and
/// once shortly after start).
async fn purge_loop(outbox: Outbox, settings: Arc<Settings>, mut shutdown: watch::Receiver<bool>) {
    let keep_h = settings.dispatch.keep_sent_h;
    if keep_h <= 0.0 {
        return;
    }
    let mut wait = Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = Duration::from_secs(600);
        let cutoff = now_ms() - (keep_h * 3_600_000.0) as i64;
        loop {
            match purge_delivered(&outbox, &settings.dispatch.outbox_dir, cutoff).await {
                Ok(0) => break,
                Ok(n) => info!(
                    files = n,
                    keep_h, "delivered results removed from the outbox"
                ),
                Err(e) => {
                    warn!(error = %e, "outbox clean-up failed");
                    break;
                }
            }
        }
    }
}

struct DestinationWorker {
    outbox: Outbox,
    index: Index,
    settings: Arc<Settings>,
    dest: DestinationSettings,
    sink: Box<dyn Sink>,
}

impl DestinationWorker {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let span =
            tracing::info_span!("destination", name = %self.dest.name, ae = %self.dest.ae_title);
        async move {
            let d = &self.settings.dispatch;
            let poll = Duration::from_millis(d.poll_ms);
            let mut failures = 0i64;
            let mut backoff_until: i64 = 0;
            let mut wake = self.index.wakeups().subscribe(Topic::Outbox);
            loop {
                if *shutdown.borrow() {
                    return;
                }
                wake.arm();
                let now = now_ms();
                let paused = crate::control::paused(crate::control::Activity::Delivery);
                if now >= backoff_until && !paused {
                    match self.deliver_batch().await {
                        Ok(BatchOutcome::Idle) | Ok(BatchOutcome::Sent) => {
                            if failures > 0 {
                                info!("destination reachable again");
                            }
                            failures = 0;
                        }
                        Ok(BatchOutcome::Unreachable) => {
                            failures += 1;
                            backoff_until =
                                now_ms() + backoff_ms(failures, d.retry_base_s, d.retry_max_s);
                        }
                        Err(e) => warn!(error = %e, "outbox unavailable"),
                    }
                    if matches!(self.pending_now().await, Ok(true)) && now_ms() >= backoff_until {
                        continue;
                    }
                }
                let wait = if backoff_until > now_ms() {
                    Duration::from_millis((backoff_until - now_ms()) as u64).min(poll)
                } else {
                    poll
                };
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = wake.wait(wait) => {}
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn pending_now(&self) -> Result<bool, IndexError> {
        self.outbox.pending_now(&self.dest.name).await
    }

    /// Record a failed attempt (see [`Outbox::mark_failed`]) and count it.
    async fn mark_failed(
        &self,
        d: &Delivery,
        status: Option<u16>,
        error: &str,
        dead: bool,
        delay_ms: i64,
    ) -> Result<(), IndexError> {
        crate::metrics::metrics().delivery(&d.destination, false);
        self.outbox
            .mark_failed(d, status, error, dead, delay_ms)
            .await
    }

    async fn deliver_batch(&self) -> Result<BatchOutcome, IndexError> {
        let d = &self.settings.dispatch;
        let lease_ms = ((d.connect_timeout_s + d.dimse_timeout_s) * 1000.0 * 4.0) as i64;
        let items = self.outbox.claim(&self.dest.name, 32, lease_ms).await?;
        if items.is_empty() {
            return Ok(BatchOutcome::Idle);
        }
        let root = PathBuf::from(&self.settings.dispatch.outbox_dir);
        let batch: Vec<SinkItem> = items
            .iter()
            .map(|i| SinkItem {
                path: root.join(&i.path),
                sop_class_uid: i.sop_class_uid.clone(),
                sop_instance_uid: i.sop_instance_uid.clone(),
            })
            .collect();
        let started = std::time::Instant::now();
        match self.sink.send(&batch).await {
            Err(e) => {
                warn!(error = %e, items = items.len(), "delivery failed: destination backs off");
                for it in &items {
                    let dead = it.attempts + 1 >= d.max_attempts;
                    let delay = backoff_ms(it.attempts + 1, d.retry_base_s, d.retry_max_s);
                    self.mark_failed(it, None, &e.to_string(), dead, delay)
                        .await?;
                    self.event(
                        it,
                        &format!(
                            "delivery to {} failed (attempt {}): {e}{}",
                            self.dest.name,
                            it.attempts + 1,
                            if dead { "; dead-lettered" } else { "" }
                        ),
                    )
                    .await;
                }
                Ok(BatchOutcome::Unreachable)
            }
            Ok(answers) => {
                for (it, answer) in items.iter().zip(answers) {
                    match answer {
                        Answer::Accepted(st) => {
                            self.outbox.mark_sent(&it.id, st).await?;
                            crate::metrics::metrics().delivery(&self.dest.name, true);
                            info!(sop = %it.sop_instance_uid, status = format!("{st:04X}"), ms = started.elapsed().as_millis() as u64, "delivered");
                            let warning = if st != 0 { " (warning)" } else { "" };
                            self.event(
                                it,
                                &format!(
                                    "delivered {} {} to {}, status {st:04X}{warning}",
                                    form_name(it),
                                    it.sop_instance_uid,
                                    self.dest.name
                                ),
                            )
                            .await;
                        }
                        Answer::Refused {
                            status: st,
                            retryable,
                        } => {
                            let retry = retryable && it.attempts + 1 < d.max_attempts;
                            let delay = backoff_ms(it.attempts + 1, d.retry_base_s, d.retry_max_s);
                            self.mark_failed(
                                it,
                                Some(st),
                                &format!("refused with status {st:04X}"),
                                !retry,
                                delay,
                            )
                            .await?;
                            warn!(sop = %it.sop_instance_uid, status = format!("{st:04X}"), retry, "destination refused the object");
                            self.event(
                                it,
                                &format!(
                                    "{} refused {} {} with status {st:04X}{}",
                                    self.dest.name,
                                    form_name(it),
                                    it.sop_instance_uid,
                                    if retry {
                                        "; will retry"
                                    } else {
                                        "; dead-lettered"
                                    }
                                ),
                            )
                            .await;
                        }
                        Answer::Failed(e) => {
                            let dead = it.attempts + 1 >= d.max_attempts;
                            let delay = backoff_ms(it.attempts + 1, d.retry_base_s, d.retry_max_s);
                            self.mark_failed(it, None, &e, dead, delay).await?;
                            self.event(
                                it,
                                &format!(
                                    "delivery of {} {} to {} failed: {e}",
                                    form_name(it),
                                    it.sop_instance_uid,
                                    self.dest.name
                                ),
                            )
                            .await;
                        }
                    }
                }
                Ok(BatchOutcome::Sent)
            }
        }
    }

    async fn event(&self, it: &Delivery, detail: &str) {
        if let Err(e) = self
            .index
            .add_event(&it.series_uid, it.revision, "delivery", detail)
            .await
        {
            warn!(error = %e, "could not record a delivery event");
        }
    }
}

/// The result form of a delivery, for the history ("seg", "sc", "rtstruct", "sr").
fn form_name(d: &Delivery) -> &'static str {
    segnode_imaging::result::form_of_sop_class(&d.sop_class_uid).unwrap_or("object")
}

enum BatchOutcome {
    Idle,
    Sent,
    Unreachable,
}
