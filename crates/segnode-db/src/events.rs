//! The history of each series (`series_events`): received → complete because … → routed → job done
//! → delivered, one row per step, shown by `segnode series show`. Other modules append entries inside
//! their own transactions through [`insert_event`].

use sqlx::Row;

use crate::error::IndexError;
use crate::pool::Index;
use crate::time::now_ms;

/// One history entry of a series.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesEvent {
    pub revision: i64,
    pub at_ms: i64,
    pub event: String,
    pub detail: Option<String>,
}

/// Append a history entry inside `tx`.
pub(crate) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    series_uid: &str,
    revision: i64,
    at_ms: i64,
    event: &str,
    detail: &str,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO series_events (series_uid, revision, at_ms, event, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(series_uid)
    .bind(revision)
    .bind(at_ms)
    .bind(event)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Index {
    /// Append a history entry.
    pub async fn add_event(
        &self,
        series_uid: &str,
        revision: i64,
        event: &str,
        detail: &str,
    ) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        insert_event(&mut tx, series_uid, revision, now_ms(), event, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// History of a series, oldest first.
    pub async fn series_events(&self, series_uid: &str) -> Result<Vec<SeriesEvent>, IndexError> {
        let rows = sqlx::query(
            "SELECT revision, at_ms, event, detail FROM series_events WHERE series_uid = $1 ORDER BY id",
        )
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SeriesEvent {
                    revision: r.try_get("revision")?,
                    at_ms: r.try_get("at_ms")?,
                    event: r.try_get("event")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// How many history entries of kind `event` exist, over every series.
    pub async fn event_count(&self, event: &str) -> Result<i64, IndexError> {
        let n = sqlx::query("SELECT COUNT(*) AS n FROM series_events WHERE event = $1")
            .bind(event)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n)
    }
}
