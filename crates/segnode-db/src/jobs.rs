//! The job queue (`jobs`), kept in the index database: one job per (series revision, pipeline).
//!
//! States ([`JobState`]): QUEUED → RUNNING → DONE, or FAILED (waiting for a retry after exponential
//! backoff with jitter) → … → DEAD after `max_attempts`. A worker claims a job with a lease that it
//! renews while it works; a job whose lease expired (its worker died) is claimable again. Every state
//! change is conditional on the lease owner, so a worker that lost its lease can never complete a job
//! twice. PostgreSQL claims skip rows other workers hold (`FOR UPDATE SKIP LOCKED`); SQLite serialises
//! writers. Completing a job queues its deliveries ([`crate::outbox`]) in the same transaction.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::IndexError;
use crate::ids::new_id;
use crate::notify::Topic;
use crate::options::Backend;
use crate::outbox::{insert_delivery, NewDelivery};
use crate::pool::Index;
use crate::schema::JOBS_LIVE;
use crate::state::JobState;
use crate::time::{backoff_ms, now_ms};

/// A job as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    pub id: String,
    pub series_uid: String,
    pub revision: i64,
    pub pipeline: String,
    pub rules: String,
    /// Destination names, comma-separated.
    pub destinations: String,
    pub state: JobState,
    pub attempts: i64,
    pub not_before_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error: Option<String>,
    /// JSON summary of the result (timings, measurements, what was sent).
    pub result: Option<String>,
}

impl Job {
    pub fn destination_list(&self) -> Vec<String> {
        self.destinations
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub series_uid: String,
    pub revision: i64,
    pub pipeline: String,
    /// The routing rules that chose it.
    pub rules: Vec<String>,
    pub destinations: Vec<String>,
}

const COLUMNS: &str =
    "id, series_uid, revision, pipeline, rules, destinations, state, attempts, not_before_ms, \
    lease_owner, lease_until_ms, created_ms, started_ms, finished_ms, error, result";

fn job_record(r: &AnyRow) -> Result<Job, IndexError> {
    Ok(Job {
        id: r.try_get("id")?,
        series_uid: r.try_get("series_uid")?,
        revision: r.try_get("revision")?,
        pipeline: r.try_get("pipeline")?,
        rules: r.try_get("rules")?,
        destinations: r.try_get("destinations")?,
        state: JobState::from_column(r.try_get("state")?)?,
        attempts: r.try_get("attempts")?,
        not_before_ms: r.try_get("not_before_ms")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until_ms: r.try_get("lease_until_ms")?,
        created_ms: r.try_get("created_ms")?,
        started_ms: r.try_get("started_ms")?,
        finished_ms: r.try_get("finished_ms")?,
        error: r.try_get("error")?,
        result: r.try_get("result")?,
    })
}

/// Insert the job of (series revision, pipeline) in `tx` unless it exists (the caller wakes the
/// workers after the commit). Returns whether it was created.
pub(crate) async fn insert_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    series_uid: &str,
    revision: i64,
    pipeline: &str,
    rules: &[String],
    destinations: &[String],
) -> Result<bool, IndexError> {
    let r = sqlx::query(
        "INSERT INTO jobs (id, series_uid, revision, pipeline, rules, destinations, state, attempts,
            not_before_ms, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)
         ON CONFLICT (series_uid, revision, pipeline) DO NOTHING",
    )
    .bind(new_id())
    .bind(series_uid)
    .bind(revision)
    .bind(pipeline)
    .bind(rules.join(","))
    .bind(destinations.join(","))
    .bind(JobState::Queued.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Queue operations over the index database.
#[derive(Clone)]
pub struct Queue {
    index: Index,
}

impl Queue {
    pub fn new(index: Index) -> Queue {
        Queue { index }
    }

    /// Create the job of (series revision, pipeline) unless it exists, and wake the workers. Returns
    /// whether it was created.
    pub async fn create(
        &self,
        series_uid: &str,
        revision: i64,
        pipeline: &str,
        rules: &[String],
        destinations: &[String],
    ) -> Result<bool, IndexError> {
        let mut tx = self.index.pool.begin().await?;
        let created =
            insert_job(&mut tx, series_uid, revision, pipeline, rules, destinations).await?;
        if created {
            self.index.notify_in(&mut tx, Topic::Jobs).await?;
        }
        tx.commit().await?;
        if created {
            self.index.wakeups.ring(Topic::Jobs);
        }
        Ok(created)
    }

    /// Create several jobs in one transaction (those that exist are skipped) and wake the workers once,
    /// at the commit. Returns how many were created.
    pub async fn create_many(&self, jobs: &[NewJob]) -> Result<usize, IndexError> {
        let mut tx = self.index.pool.begin().await?;
        let mut created = 0;
        for j in jobs {
            if insert_job(
                &mut tx,
                &j.series_uid,
                j.revision,
                &j.pipeline,
                &j.rules,
                &j.destinations,
            )
            .await?
            {
                created += 1;
            }
        }
        if created > 0 {
            self.index.notify_in(&mut tx, Topic::Jobs).await?;
        }
        tx.commit().await?;
        if created > 0 {
            self.index.wakeups.ring(Topic::Jobs);
        }
        Ok(created)
    }

    /// Claim the oldest due job of one of `pipelines` for `owner`, with a lease of `lease_ms`.
    pub async fn claim(
        &self,
        pipelines: &[String],
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Job>, IndexError> {
        if pipelines.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let placeholders: Vec<String> = (0..pipelines.len())
            .map(|i| format!("${}", i + 6))
            .collect();
        let lock = match self.index.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // the due-condition is repeated outside the sub-select: a row another claimer changed after
        // this statement's snapshot is re-checked against its new version, never taken twice
        let due = format!(
            "(((state = '{queued}' OR state = '{failed}') AND not_before_ms <= $5)
                OR (state = '{running}' AND lease_until_ms < $5))",
            queued = JobState::Queued.as_str(),
            failed = JobState::Failed.as_str(),
            running = JobState::Running.as_str(),
        );
        // the sub-select repeats the condition of the partial index `jobs_live` (SQLite uses it only
        // then)
        let sql = format!(
            "UPDATE jobs SET state = $1, lease_owner = $2, lease_until_ms = $3, attempts = attempts + 1,
                started_ms = $4
             WHERE id = (SELECT id FROM jobs
                WHERE {JOBS_LIVE} AND pipeline IN ({}) AND {due}
                ORDER BY created_ms LIMIT 1{lock}) AND {due}
             RETURNING {COLUMNS}",
            placeholders.join(", ")
        );
        // the SQL text is built from constants and placeholder numbers only
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(JobState::Running.as_str())
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(now);
        for p in pipelines {
            q = q.bind(p);
        }
        let row = q.fetch_optional(&self.index.pool).await?;
        row.as_ref().map(job_record).transpose()
    }

    /// Extend a lease; false when the lease was lost (another worker owns the job now).
    pub async fn renew(&self, id: &str, owner: &str, lease_ms: i64) -> Result<bool, IndexError> {
        let r = sqlx::query(
            "UPDATE jobs SET lease_until_ms = $1 WHERE id = $2 AND lease_owner = $3 AND state = $4",
        )
        .bind(now_ms() + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(JobState::Running.as_str())
        .execute(&self.index.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Mark a job DONE with its result and queue the deliveries of its result file, in one transaction.
    /// Returns false (and changes nothing) when the lease was lost: another worker owns the job.
    pub async fn complete(
        &self,
        job: &Job,
        owner: &str,
        result_json: &str,
        deliveries: &[NewDelivery],
    ) -> Result<bool, IndexError> {
        let mut tx = self.index.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = $1, result = $2, finished_ms = $3, error = NULL, lease_owner = NULL,
                lease_until_ms = NULL
             WHERE id = $4 AND lease_owner = $5 AND state = $6",
        )
        .bind(JobState::Done.as_str())
        .bind(result_json)
        .bind(now_ms())
        .bind(&job.id)
        .bind(owner)
        .bind(JobState::Running.as_str())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for d in deliveries {
            insert_delivery(&mut tx, &job.id, &job.series_uid, job.revision, d).await?;
        }
        if !deliveries.is_empty() {
            self.index.notify_in(&mut tx, Topic::Outbox).await?;
        }
        tx.commit().await?;
        if !deliveries.is_empty() {
            self.index.wakeups.ring(Topic::Outbox);
        }
        Ok(true)
    }

    /// Mark a job failed: retried after a backoff, or DEAD once `max_attempts` is reached.
    /// Returns the new state, or None when the lease was lost.
    pub async fn fail(
        &self,
        job: &Job,
        owner: &str,
        error: &str,
        max_attempts: i64,
        retry_base_s: f64,
        retry_max_s: f64,
    ) -> Result<Option<JobState>, IndexError> {
        let (state, not_before) = if job.attempts >= max_attempts {
            (JobState::Dead, 0)
        } else {
            (
                JobState::Failed,
                now_ms() + backoff_ms(job.attempts, retry_base_s, retry_max_s),
            )
        };
        let r = sqlx::query(
            "UPDATE jobs SET state = $1, not_before_ms = $2, error = $3, finished_ms = $4, lease_owner = NULL,
                lease_until_ms = NULL
             WHERE id = $5 AND lease_owner = $6 AND state = $7",
        )
        .bind(state.as_str())
        .bind(not_before)
        .bind(error)
        .bind(now_ms())
        .bind(&job.id)
        .bind(owner)
        .bind(JobState::Running.as_str())
        .execute(&self.index.pool)
        .await?;
        Ok((r.rows_affected() == 1).then_some(state))
    }

    /// Put a FAILED or DEAD job back in the queue now (manual retry) and wake the workers. Returns
    /// whether it was requeued.
    pub async fn retry(&self, id: &str) -> Result<bool, IndexError> {
        let r = sqlx::query(
            "UPDATE jobs SET state = $1, not_before_ms = $2, attempts = 0 WHERE id = $3 AND (state = $4 OR state = $5)",
        )
        .bind(JobState::Queued.as_str())
        .bind(now_ms())
        .bind(id)
        .bind(JobState::Failed.as_str())
        .bind(JobState::Dead.as_str())
        .execute(&self.index.pool)
        .await?;
        let requeued = r.rows_affected() == 1;
        if requeued {
            self.index.announce(Topic::Jobs).await?;
        }
        Ok(requeued)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, IndexError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.index.pool)
            .await?;
        row.as_ref().map(job_record).transpose()
    }

    /// Jobs, newest first (optionally of one series).
    pub async fn list(&self, series_uid: Option<&str>) -> Result<Vec<Job>, IndexError> {
        let rows = match series_uid {
            Some(uid) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM jobs WHERE series_uid = $1 ORDER BY created_ms DESC"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(uid)
                    .fetch_all(&self.index.pool)
                    .await?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM jobs ORDER BY created_ms DESC");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.index.pool)
                    .await?
            }
        };
        rows.iter().map(job_record).collect()
    }

    /// How many jobs are in `state` among those whose series UID starts with `series_prefix` (the
    /// queue benchmark waits on this; `""` counts every series).
    pub async fn count(&self, state: JobState, series_prefix: &str) -> Result<i64, IndexError> {
        let n = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE state = $1 AND series_uid LIKE $2 ESCAPE '\\'",
        )
        .bind(state.as_str())
        .bind(format!("{}%", like_literal(series_prefix)))
        .fetch_one(&self.index.pool)
        .await?
        .try_get("n")?;
        Ok(n)
    }
}

/// `s` as a LIKE pattern that matches itself only (`\` escapes the wildcards and itself).
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(like_literal("tp."), "tp.");
        assert_eq!(like_literal("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
