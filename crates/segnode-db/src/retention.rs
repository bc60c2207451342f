//! Retention: which series may leave the disk, and the two-step purge that keeps their history.
//!
//! A series may be purged when it is COMPLETE and routed (its revision was routed: jobs created, or no
//! rule matched), no job of it may still run (QUEUED, RUNNING, or FAILED and waiting for a retry) and no
//! delivery of it is waiting or being sent. A purge first **claims** the series (COMPLETE → PURGING, in
//! one conditional UPDATE that re-checks all of that, so of several nodes on one database exactly one
//! wins, and a series that a late instance reopened is not taken), then the application removes the
//! files, then [`Index::finish_purge`] drops the instance rows and marks it PURGED with an event. The
//! series row, its events, jobs and deliveries stay: the history. A node that dies between the steps
//! leaves a PURGING series that [`Index::purging_series`] hands back at the next start. A new instance of
//! a PURGING or PURGED series opens a new revision like one of a COMPLETE series.

use sqlx::Row;

use crate::error::IndexError;
use crate::events::insert_event;
use crate::pool::Index;
use crate::schema::{jobs_live, outbox_live};
use crate::state::SeriesState;
use crate::time::now_ms;

/// The conditions under which a series' files may go (besides its state), on `series s`.
macro_rules! purgeable {
    () => {
        concat!(
            "s.routed_revision = s.revision
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = s.series_uid AND j.",
            jobs_live!(),
            ") AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.series_uid = s.series_uid AND o.",
            outbox_live!(),
            ")"
        )
    };
}

/// A series and the revision a purge acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeTarget {
    pub series_uid: String,
    pub revision: i64,
}

/// A purge target from a row with `series_uid` and `revision`.
fn purge_target(r: &sqlx::any::AnyRow) -> Result<PurgeTarget, IndexError> {
    Ok(PurgeTarget {
        series_uid: r.try_get("series_uid")?,
        revision: r.try_get("revision")?,
    })
}

/// A stored file of a series being purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeFile {
    pub sop_uid: String,
    /// Relative to the store root.
    pub path: String,
    pub size_bytes: i64,
}

impl Index {
    /// Series that may be purged, completed before `completed_before_ms`, oldest first.
    pub async fn purge_candidates(
        &self,
        completed_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<PurgeTarget>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT s.series_uid, s.revision FROM series s WHERE s.state = $1 AND s.completed_ms < $2 AND ",
            purgeable!(),
            " ORDER BY s.completed_ms LIMIT $3"
        ))
        .bind(SeriesState::Complete.as_str())
        .bind(completed_before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(purge_target).collect()
    }

    /// Claim a series for purging (COMPLETE → PURGING) if it still may be purged; `false` when another
    /// node took it, an instance reopened it, or work on it is pending. `why` goes into the history.
    pub async fn claim_purge(&self, t: &PurgeTarget, why: &str) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(concat!(
            "UPDATE series SET state = $1 WHERE series_uid = $2 AND revision = $3 AND state = $4 AND EXISTS
             (SELECT 1 FROM series s WHERE s.series_uid = $2 AND ",
            purgeable!(),
            ")"
        ))
        .bind(SeriesState::Purging.as_str())
        .bind(&t.series_uid)
        .bind(t.revision)
        .bind(SeriesState::Complete.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            insert_event(&mut tx, &t.series_uid, t.revision, now_ms(), "purge", why).await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Series left PURGING (by a node that stopped mid-purge).
    pub async fn purging_series(&self) -> Result<Vec<PurgeTarget>, IndexError> {
        let rows = sqlx::query("SELECT series_uid, revision FROM series WHERE state = $1")
            .bind(SeriesState::Purging.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(purge_target).collect()
    }

    /// The files of a claimed series (instances of its purged revision or earlier).
    pub async fn purge_files(&self, t: &PurgeTarget) -> Result<Vec<PurgeFile>, IndexError> {
        let rows = sqlx::query(
            "SELECT sop_uid, path, size_bytes FROM instances WHERE series_uid = $1 AND revision <= $2",
        )
        .bind(&t.series_uid)
        .bind(t.revision)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PurgeFile {
                    sop_uid: r.try_get("sop_uid")?,
                    path: r.try_get("path")?,
                    size_bytes: r.try_get("size_bytes")?,
                })
            })
            .collect()
    }

    /// After the files are gone: drop their instance rows (those still of the purged revision) and mark
    /// the series PURGED with a history event. Returns whether the series is now PURGED (`false` when an
    /// instance reopened it meanwhile: its new revision stays).
    pub async fn finish_purge(
        &self,
        t: &PurgeTarget,
        removed: &[PurgeFile],
    ) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        for f in removed {
            sqlx::query(
                "DELETE FROM instances WHERE sop_uid = $1 AND series_uid = $2 AND revision <= $3",
            )
            .bind(&f.sop_uid)
            .bind(&t.series_uid)
            .bind(t.revision)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query(
            "UPDATE series SET state = $1 WHERE series_uid = $2 AND revision = $3 AND state = $4",
        )
        .bind(SeriesState::Purged.as_str())
        .bind(&t.series_uid)
        .bind(t.revision)
        .bind(SeriesState::Purging.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let mb = removed.iter().map(|f| f.size_bytes).sum::<i64>() as f64 / 1_048_576.0;
        insert_event(
            &mut tx,
            &t.series_uid,
            t.revision,
            now_ms(),
            "purge",
            &format!(
                "files removed: {} instances, {mb:.1} MB; history kept{}",
                removed.len(),
                if done {
                    ""
                } else {
                    " (a new revision arrived meanwhile)"
                }
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(done)
    }
}
