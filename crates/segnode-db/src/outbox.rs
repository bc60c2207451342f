//! Deliveries (`outbox`): one row per (result file, destination), created with the job's completion
//! ([`crate::jobs::Queue::complete`]), claimed by the dispatcher of its destination with a lease,
//! marked SENT on the destination's success response (never resent after a restart), retried or
//! dead-lettered ([`DeliveryState`]), and marked purged once the application removed the delivered
//! file. The result files themselves are the application's; this module only keeps their rows.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::IndexError;
use crate::ids::new_id;
use crate::notify::Topic;
use crate::options::Backend;
use crate::pool::Index;
use crate::schema::{outbox_live, outbox_unpurged};
use crate::state::DeliveryState;
use crate::time::now_ms;

/// A result file to deliver to one destination (created with the job's completion).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub destination: String,
    /// Relative to `dispatch.outbox_dir`.
    pub path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// A delivery as stored.
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
    pub state: DeliveryState,
    pub attempts: i64,
    pub not_before_ms: i64,
    pub last_status: Option<String>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, job_id, series_uid, revision, destination, path, sop_class_uid, sop_instance_uid, \
        state, attempts, not_before_ms, last_status, error, created_ms, sent_ms"
    };
}

fn delivery_record(r: &AnyRow) -> Result<Delivery, IndexError> {
    Ok(Delivery {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        series_uid: r.try_get("series_uid")?,
        revision: r.try_get("revision")?,
        destination: r.try_get("destination")?,
        path: r.try_get("path")?,
        sop_class_uid: r.try_get("sop_class_uid")?,
        sop_instance_uid: r.try_get("sop_instance_uid")?,
        state: DeliveryState::from_column(r.try_get("state")?)?,
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
    job_id: &str,
    series_uid: &str,
    revision: i64,
    d: &NewDelivery,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO outbox (id, job_id, series_uid, revision, destination, path, sop_class_uid, sop_instance_uid,
            state, attempts, not_before_ms, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10)",
    )
    .bind(new_id())
    .bind(job_id)
    .bind(series_uid)
    .bind(revision)
    .bind(&d.destination)
    .bind(&d.path)
    .bind(&d.sop_class_uid)
    .bind(&d.sop_instance_uid)
    .bind(DeliveryState::Pending.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Outbox operations over the index database.
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
        let lock = match self.index.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // (it starts with the condition of the partial index of live deliveries, which selects it)
        const DUE: &str = concat!(
            outbox_live!(),
            " AND destination = $3 AND (state = $4 OR state = $1)
            AND not_before_ms <= $5"
        );
        let sql = format!(
            "UPDATE outbox SET state = $1, not_before_ms = $2
             WHERE id IN (SELECT id FROM outbox WHERE {DUE} ORDER BY created_ms LIMIT $6{lock})
                AND {DUE}
             RETURNING {}",
            columns!()
        );
        // constant text and the lock clause
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(DeliveryState::Sending.as_str())
            .bind(now + lease_ms)
            .bind(destination)
            .bind(DeliveryState::Pending.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(&self.index.pool)
            .await?;
        let mut items: Vec<Delivery> =
            rows.iter().map(delivery_record).collect::<Result<_, _>>()?;
        items.sort_by_key(|d| d.created_ms);
        Ok(items)
    }

    /// Whether `destination` has an item due now.
    pub async fn pending_now(&self, destination: &str) -> Result<bool, IndexError> {
        let n: i64 = sqlx::query(concat!(
            "SELECT COUNT(*) AS n FROM outbox WHERE ",
            outbox_live!(),
            " AND destination = $1 AND state = $2 AND not_before_ms <= $3"
        ))
        .bind(destination)
        .bind(DeliveryState::Pending.as_str())
        .bind(now_ms())
        .fetch_one(&self.index.pool)
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    pub async fn mark_sent(&self, id: &str, status: u16) -> Result<(), IndexError> {
        sqlx::query("UPDATE outbox SET state = $1, last_status = $2, sent_ms = $3, attempts = attempts + 1, error = NULL WHERE id = $4")
            .bind(DeliveryState::Sent.as_str())
            .bind(format!("{status:04X}"))
            .bind(now_ms())
            .bind(id)
            .execute(&self.index.pool)
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
        let state = if dead {
            DeliveryState::Dead
        } else {
            DeliveryState::Pending
        };
        sqlx::query("UPDATE outbox SET state = $1, last_status = $2, error = $3, attempts = attempts + 1, not_before_ms = $4 WHERE id = $5")
            .bind(state.as_str())
            .bind(status.map(|s| format!("{s:04X}")))
            .bind(error)
            .bind(now_ms() + delay_ms)
            .bind(&d.id)
            .execute(&self.index.pool)
            .await?;
        Ok(())
    }

    /// The result files (relative paths, at most 500) not purged yet whose every delivery was
    /// acknowledged before `sent_before_ms`: the ones the application may remove now.
    pub async fn purgeable(&self, sent_before_ms: i64) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT path FROM outbox WHERE ",
            outbox_unpurged!(),
            " GROUP BY path
             HAVING SUM(CASE WHEN state = $2 AND sent_ms < $1 THEN 0 ELSE 1 END) = 0
             LIMIT 500"
        ))
        .bind(sent_before_ms)
        .bind(DeliveryState::Sent.as_str())
        .fetch_all(&self.index.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("path").map_err(IndexError::from))
            .collect()
    }

    /// Record that the result file `path` was removed (its deliveries can no longer be resent).
    pub async fn mark_purged(&self, path: &str) -> Result<(), IndexError> {
        sqlx::query(concat!(
            "UPDATE outbox SET purged_ms = $1 WHERE path = $2 AND ",
            outbox_unpurged!()
        ))
        .bind(now_ms())
        .bind(path)
        .execute(&self.index.pool)
        .await?;
        Ok(())
    }

    /// Manual resend of a DEAD (or SENT) item. Returns false when there is no such item; an error when
    /// its file was already removed after delivery.
    pub async fn resend(&self, id: &str) -> Result<bool, IndexError> {
        let purged = sqlx::query("SELECT purged_ms FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.index.pool)
            .await?
            .map(|r| r.try_get::<Option<i64>, _>("purged_ms"))
            .transpose()?
            .flatten();
        if purged.is_some() {
            return Err(IndexError::Gone(format!(
                "the result file of delivery {id} was removed after delivery (dispatch.keep_sent_h); retry the job instead"
            )));
        }
        let r = sqlx::query("UPDATE outbox SET state = $1, attempts = 0, not_before_ms = $2 WHERE id = $3 AND (state = $4 OR state = $5)")
            .bind(DeliveryState::Pending.as_str())
            .bind(now_ms())
            .bind(id)
            .bind(DeliveryState::Dead.as_str())
            .bind(DeliveryState::Sent.as_str())
            .execute(&self.index.pool)
            .await?;
        let queued = r.rows_affected() == 1;
        if queued {
            self.index.announce(Topic::Outbox).await?;
        }
        Ok(queued)
    }

    pub async fn list(&self) -> Result<Vec<Delivery>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM outbox ORDER BY created_ms DESC"
        ))
        .fetch_all(&self.index.pool)
        .await?;
        rows.iter().map(delivery_record).collect()
    }
}
