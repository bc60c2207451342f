//! Delivery of results: the outbox (durable, in the index database and the outbox folder) and the
//! dispatcher that sends each item to its destination with C-STORE.
//!
//! One task per destination, so a destination that is down never delays the others. A failed
//! association backs the whole destination off exponentially (with jitter); a failure status for one
//! object retries that object (Out of Resources) or dead-letters it (any other failure). After
//! `dispatch.max_attempts` an item is DEAD until `segnode outbox resend`. An item is marked SENT as soon as
//! its success response arrives, so a restart never resends what the PACS already acknowledged. A result
//! file is removed `dispatch.keep_sent_h` after the last of its destinations acknowledged it (never
//! while any delivery of it is pending or dead), so a node left running for months does not fill its
//! disk with results.

use sqlx::Row;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::config::{secs, DestinationSettings, Settings};
use crate::net::dimse;
use crate::net::scu::{self, Outgoing, Peer, ScuOptions};
use crate::queue::{backoff_ms, new_id, Job};
use crate::store::index::{now_ms, Backend, Index, IndexError};
use crate::store::wakeup::Topic;

pub const PENDING: &str = "PENDING";
pub const SENDING: &str = "SENDING";
pub const SENT: &str = "SENT";
pub const DEAD: &str = "DEAD";

/// A result file to deliver to one destination (created with the job's completion).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub destination: String,
    /// Relative to `dispatch.outbox_dir`.
    pub path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// An outbox row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    pub id: String,
    pub job_id: String,
    pub series_uid: String,
    pub revision: i64,
    pub destination: String,
    pub path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub state: String,
    pub attempts: i64,
    pub not_before_ms: i64,
    pub last_status: Option<String>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
}

const COLUMNS: &str =
    "id, job_id, series_uid, revision, destination, path, sop_class_uid, sop_instance_uid, \
    state, attempts, not_before_ms, last_status, error, created_ms, sent_ms";

fn row(r: &sqlx::any::AnyRow) -> Result<Delivery, IndexError> {
    Ok(Delivery {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        series_uid: r.try_get("series_uid")?,
        revision: r.try_get("revision")?,
        destination: r.try_get("destination")?,
        path: r.try_get("path")?,
        sop_class_uid: r.try_get("sop_class_uid")?,
        sop_instance_uid: r.try_get("sop_instance_uid")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        not_before_ms: r.try_get("not_before_ms")?,
        last_status: r.try_get("last_status")?,
        error: r.try_get("error")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
    })
}

/// Insert a delivery inside the transaction that completes its job.
pub(crate) async fn insert_delivery(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job: &Job,
    d: &NewDelivery,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO outbox (id, job_id, series_uid, revision, destination, path, sop_class_uid, sop_instance_uid,
            state, attempts, not_before_ms, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10)",
    )
    .bind(new_id())
    .bind(&job.id)
    .bind(&job.series_uid)
    .bind(job.revision)
    .bind(&d.destination)
    .bind(&d.path)
    .bind(&d.sop_class_uid)
    .bind(&d.sop_instance_uid)
    .bind(PENDING)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Outbox queries.
#[derive(Clone)]
pub struct Outbox {
    index: Index,
}

impl Outbox {
    pub fn new(index: Index) -> Outbox {
        Outbox { index }
    }

    /// Take up to `limit` due items of `destination` for sending (a lease of `lease_ms` covers a sender
    /// that dies mid-way).
    pub async fn claim(
        &self,
        destination: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Delivery>, IndexError> {
        let now = now_ms();
        // PostgreSQL: receivers sharing the database skip the rows another dispatcher is taking; the
        // due-condition is repeated outside the sub-select so a row changed meanwhile is re-checked
        let lock = match self.index.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // (the literal state list selects the partial index of live deliveries)
        let due =
            "state IN ('PENDING', 'SENDING') AND destination = $3 AND (state = $4 OR state = $1)
            AND not_before_ms <= $5";
        let sql = format!(
            "UPDATE outbox SET state = $1, not_before_ms = $2
             WHERE id IN (SELECT id FROM outbox WHERE {due} ORDER BY created_ms LIMIT $6{lock})
                AND {due}
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(SENDING)
            .bind(now + lease_ms)
            .bind(destination)
            .bind(PENDING)
            .bind(now)
            .bind(limit)
            .fetch_all(self.index.pool())
            .await?;
        let mut items: Vec<Delivery> = rows.iter().map(row).collect::<Result<_, _>>()?;
        items.sort_by_key(|d| d.created_ms);
        Ok(items)
    }

    pub async fn mark_sent(&self, id: &str, status: u16) -> Result<(), IndexError> {
        sqlx::query("UPDATE outbox SET state = $1, last_status = $2, sent_ms = $3, attempts = attempts + 1, error = NULL WHERE id = $4")
            .bind(SENT)
            .bind(format!("{status:04X}"))
            .bind(now_ms())
            .bind(id)
            .execute(self.index.pool())
            .await?;
        Ok(())
    }

    /// Record a failed attempt: back to PENDING after `delay_ms`, or DEAD.
    pub async fn mark_failed(
        &self,
        d: &Delivery,
        status: Option<u16>,
        error: &str,
        dead: bool,
        delay_ms: i64,
    ) -> Result<(), IndexError> {
        crate::metrics::metrics().delivery(&d.destination, false);
        sqlx::query("UPDATE outbox SET state = $1, last_status = $2, error = $3, attempts = attempts + 1, not_before_ms = $4 WHERE id = $5")
            .bind(if dead { DEAD } else { PENDING })
            .bind(status.map(|s| format!("{s:04X}")))
            .bind(error)
            .bind(now_ms() + delay_ms)
            .bind(&d.id)
            .execute(self.index.pool())
            .await?;
        Ok(())
    }

    /// Remove the result files whose every delivery was acknowledged before `sent_before_ms` (at most
    /// 500 per call), and mark their deliveries purged. Returns how many files were removed.
    pub async fn purge_delivered(
        &self,
        outbox_dir: &std::path::Path,
        sent_before_ms: i64,
    ) -> Result<usize, IndexError> {
        let rows = sqlx::query(
            "SELECT path FROM outbox WHERE purged_ms IS NULL GROUP BY path
             HAVING SUM(CASE WHEN state = 'SENT' AND sent_ms < $1 THEN 0 ELSE 1 END) = 0
             LIMIT 500",
        )
        .bind(sent_before_ms)
        .fetch_all(self.index.pool())
        .await?;
        let mut removed = 0;
        for r in rows {
            let rel: String = r.try_get("path")?;
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
            sqlx::query("UPDATE outbox SET purged_ms = $1 WHERE path = $2 AND purged_ms IS NULL")
                .bind(now_ms())
                .bind(&rel)
                .execute(self.index.pool())
                .await?;
        }
        Ok(removed)
    }

    /// Manual resend of a DEAD (or SENT) item. Returns false when there is no such item; an error when
    /// its file was already removed after delivery.
    pub async fn resend(&self, id: &str) -> Result<bool, IndexError> {
        let purged = sqlx::query("SELECT purged_ms FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(self.index.pool())
            .await?
            .map(|r| r.try_get::<Option<i64>, _>("purged_ms"))
            .transpose()?
            .flatten();
        if purged.is_some() {
            return Err(IndexError::Gone(format!(
                "the result file of delivery {id} was removed after delivery (dispatch.keep_sent_h); retry the job instead"
            )));
        }
        let r = sqlx::query("UPDATE outbox SET state = $1, attempts = 0, not_before_ms = $2 WHERE id = $3 AND state IN ('DEAD', 'SENT')")
            .bind(PENDING)
            .bind(now_ms())
            .bind(id)
            .execute(self.index.pool())
            .await?;
        let queued = r.rows_affected() == 1;
        if queued {
            self.index.announce(Topic::Outbox).await?;
        }
        Ok(queued)
    }

    pub async fn list(&self) -> Result<Vec<Delivery>, IndexError> {
        let sql = format!("SELECT {COLUMNS} FROM outbox ORDER BY created_ms DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.index.pool())
            .await?;
        rows.iter().map(row).collect()
    }
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
            match outbox
                .purge_delivered(&settings.dispatch.outbox_dir, cutoff)
                .await
            {
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
                if now >= backoff_until {
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
        let r = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE state IN ('PENDING', 'SENDING') AND destination = $1 AND state = $2 AND not_before_ms <= $3")
            .bind(&self.dest.name)
            .bind(PENDING)
            .bind(now_ms())
            .fetch_one(self.index.pool())
            .await?;
        Ok(r.try_get::<i64, _>("n")? > 0)
    }

    async fn deliver_batch(&self) -> Result<BatchOutcome, IndexError> {
        let d = &self.settings.dispatch;
        let lease_ms = ((d.connect_timeout_s + d.dimse_timeout_s) * 1000.0 * 4.0) as i64;
        let items = self.outbox.claim(&self.dest.name, 32, lease_ms).await?;
        if items.is_empty() {
            return Ok(BatchOutcome::Idle);
        }
        let root = PathBuf::from(&self.settings.dispatch.outbox_dir);
        let outgoing: Vec<Outgoing> = items
            .iter()
            .map(|i| Outgoing {
                path: root.join(&i.path),
                sop_class: i.sop_class_uid.clone(),
                sop_instance: i.sop_instance_uid.clone(),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
            })
            .collect();
        let peer = Peer {
            ae_title: self.dest.ae_title.clone(),
            host: self.dest.host.clone(),
            port: self.dest.port,
            calling_ae: self
                .dest
                .calling_ae
                .clone()
                .unwrap_or_else(|| self.settings.dicom.ae_title.clone()),
        };
        let opts = ScuOptions {
            connect_timeout: secs(d.connect_timeout_s),
            dimse_timeout: secs(d.dimse_timeout_s),
            max_pdu: self.settings.dicom.max_pdu,
        };
        let started = std::time::Instant::now();
        match scu::store(&peer, &opts, &outgoing).await {
            Err(e) => {
                warn!(error = %e, items = items.len(), "delivery failed: destination backs off");
                for it in &items {
                    let dead = it.attempts + 1 >= d.max_attempts;
                    let delay = backoff_ms(it.attempts + 1, d.retry_base_s, d.retry_max_s);
                    self.outbox
                        .mark_failed(it, None, &e.to_string(), dead, delay)
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
            Ok(results) => {
                for (it, res) in items.iter().zip(results) {
                    match res {
                        Ok(st) if !dimse::is_failure(st) => {
                            self.outbox.mark_sent(&it.id, st).await?;
                            crate::metrics::metrics().delivery(&self.dest.name, true);
                            info!(sop = %it.sop_instance_uid, status = format!("{st:04X}"), ms = started.elapsed().as_millis() as u64, "delivered");
                            let warning = if st != 0 { " (warning)" } else { "" };
                            self.event(
                                it,
                                &format!(
                                    "delivered {} to {}, status {st:04X}{warning}",
                                    it.sop_instance_uid, self.dest.name
                                ),
                            )
                            .await;
                        }
                        Ok(st) => {
                            // Out of Resources may pass; any other refusal will not
                            let retry = (st & 0xFF00) == 0xA700 && it.attempts + 1 < d.max_attempts;
                            let delay = backoff_ms(it.attempts + 1, d.retry_base_s, d.retry_max_s);
                            self.outbox
                                .mark_failed(
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
                                    "{} refused {} with status {st:04X}{}",
                                    self.dest.name,
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
                        Err(e) => {
                            let dead = it.attempts + 1 >= d.max_attempts;
                            let delay = backoff_ms(it.attempts + 1, d.retry_base_s, d.retry_max_s);
                            self.outbox
                                .mark_failed(it, None, &e.to_string(), dead, delay)
                                .await?;
                            self.event(it, &format!("delivery to {} failed: {e}", self.dest.name))
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

enum BatchOutcome {
    Idle,
    Sent,
    Unreachable,
}
