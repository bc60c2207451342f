//! The series lifecycle (`series`): the rows the completion tracker and the CLI read, and the
//! conditional update that marks a revision COMPLETE exactly once (same revision, same last-received
//! time and instance count as the evidence was judged on), with its history entry and the routers'
//! wake-up in the same transaction. Rows are created and reopened by instance filing
//! ([`crate::instances`]) and claimed for routing by [`crate::routing`].

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::IndexError;
use crate::events::insert_event;
use crate::notify::Topic;
use crate::pool::Index;
use crate::state::SeriesState;
use crate::time::now_ms;

/// A series as the tracker and the CLI see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesRecord {
    pub series_uid: String,
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i64>,
    pub calling_ae: Option<String>,
    pub revision: i64,
    pub state: SeriesState,
    pub completion_reason: Option<String>,
    pub expected_instances: Option<i64>,
    pub instance_count: i64,
    pub first_received_ms: i64,
    pub last_received_ms: i64,
    pub completed_ms: Option<i64>,
}

/// A caller learnt to split series over associations (it gets the settle wait).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SplittingCaller {
    pub calling_ae: String,
    /// The series whose late instance taught it.
    pub series_uid: String,
    pub learnt_ms: i64,
}

/// Columns of [`SeriesRecord`], in `SELECT` order.
macro_rules! series_columns {
    () => {
        "series_uid, study_uid, patient_id, modality, body_part, series_description,
                series_number, calling_ae, revision, state, completion_reason, expected_instances,
                instance_count, first_received_ms, last_received_ms, completed_ms"
    };
}

fn series_record(r: &AnyRow) -> Result<SeriesRecord, IndexError> {
    Ok(SeriesRecord {
        series_uid: r.try_get("series_uid")?,
        study_uid: r.try_get("study_uid")?,
        patient_id: r.try_get("patient_id")?,
        modality: r.try_get("modality")?,
        body_part: r.try_get("body_part")?,
        series_description: r.try_get("series_description")?,
        series_number: r.try_get("series_number")?,
        calling_ae: r.try_get("calling_ae")?,
        revision: r.try_get("revision")?,
        state: SeriesState::from_column(r.try_get("state")?)?,
        completion_reason: r.try_get("completion_reason")?,
        expected_instances: r.try_get("expected_instances")?,
        instance_count: r.try_get("instance_count")?,
        first_received_ms: r.try_get("first_received_ms")?,
        last_received_ms: r.try_get("last_received_ms")?,
        completed_ms: r.try_get("completed_ms")?,
    })
}

impl Index {
    /// Series still receiving (candidates for completion), newest first.
    pub async fn receiving_series(&self) -> Result<Vec<SeriesRecord>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            series_columns!(),
            " FROM series WHERE state = $1 ORDER BY first_received_ms DESC"
        ))
        .bind(SeriesState::Receiving.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_record).collect()
    }

    /// Every series, newest first.
    pub async fn list_series(&self) -> Result<Vec<SeriesRecord>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            series_columns!(),
            " FROM series ORDER BY first_received_ms DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_record).collect()
    }

    /// The series of the study that `series_uid` belongs to (itself included), newest first: the other
    /// inputs a multi-series model may take.
    pub async fn study_series_of(&self, series_uid: &str) -> Result<Vec<SeriesRecord>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            series_columns!(),
            " FROM series WHERE study_uid = (SELECT study_uid FROM series WHERE series_uid = $1) \
             ORDER BY first_received_ms DESC"
        ))
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_record).collect()
    }

    /// The learnt splitting callers with what taught each (series, time in ms).
    pub async fn splitting_callers_learnt(&self) -> Result<Vec<SplittingCaller>, IndexError> {
        let rows = sqlx::query(
            "SELECT calling_ae, series_uid, learnt_ms FROM splitting_callers ORDER BY calling_ae",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SplittingCaller {
                    calling_ae: r.try_get("calling_ae")?,
                    series_uid: r.try_get("series_uid")?,
                    learnt_ms: r.try_get("learnt_ms")?,
                })
            })
            .collect()
    }

    /// Forget that a caller splits series (it completes at release again until it is learnt anew).
    /// Returns whether it was known.
    pub async fn forget_splitting_caller(&self, calling_ae: &str) -> Result<bool, IndexError> {
        let r = sqlx::query("DELETE FROM splitting_callers WHERE calling_ae = $1")
            .bind(calling_ae)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Mark a series revision COMPLETE unless something changed it meanwhile (a new instance, another
    /// tracker). Returns whether this call completed it.
    /// `seen` is the series the evidence was judged on: its last-received time and instance count
    /// must be unchanged. `at_release`: completed the moment its association was released, without
    /// the settle wait (a late instance of it from the same caller marks that caller as one that splits
    /// series, see [`crate::instances`]).
    pub async fn complete_series(
        &self,
        seen: &SeriesRecord,
        reason: &str,
        at_release: bool,
    ) -> Result<bool, IndexError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE series SET state = $1, completion_reason = $2, completed_ms = $3,
                completed_at_release = $9
             WHERE series_uid = $4 AND revision = $5 AND state = $6 AND last_received_ms = $7
                AND instance_count = $8",
        )
        .bind(SeriesState::Complete.as_str())
        .bind(reason)
        .bind(now)
        .bind(&seen.series_uid)
        .bind(seen.revision)
        .bind(SeriesState::Receiving.as_str())
        .bind(seen.last_received_ms)
        .bind(seen.instance_count)
        .bind(i64::from(at_release))
        .execute(&mut *tx)
        .await?;
        let done = r.rows_affected() == 1;
        if done {
            insert_event(
                &mut tx,
                &seen.series_uid,
                seen.revision,
                now,
                "complete",
                reason,
            )
            .await?;
            self.notify_in(&mut tx, Topic::Series).await?;
        }
        tx.commit().await?;
        if done {
            self.wakeups.ring(Topic::Series);
        }
        Ok(done)
    }
}
