//! Availability of the database and the cheap counts that report on it: the probe the receive path
//! relies on (while the database is unreachable, instances are refused at once instead of waiting for
//! a connection each), the health ping, and rows per state for `segnode status` and `/metrics`.

use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::IndexError;
use crate::pool::Index;

/// Rows per state of the series, jobs and outbox tables.
pub type StateCounts = BTreeMap<&'static str, BTreeMap<String, i64>>;

impl Index {
    /// Whether the database answers within `limit`.
    pub async fn ping(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// Whether the database is known to be unreachable right now (see [`note_error`](Self::note_error)).
    pub fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }

    /// Look at an error of the receive path: when the database is unreachable, mark it so and probe it
    /// (every 500 ms) until it answers again.
    pub fn note_error(&self, e: &IndexError) {
        if !e.is_unavailable() || self.unavailable.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(error = %e, "index database unreachable: refusing instances until it answers");
        let index = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if index.ping(Duration::from_secs(2)).await {
                    index.unavailable.store(false, Ordering::SeqCst);
                    tracing::info!("index database reachable again");
                    return;
                }
            }
        });
    }

    /// Rows per state of the series, jobs and outbox tables (`segnode status`, health checks): one
    /// cheap query each, whatever the size of the tables' history.
    pub async fn state_counts(&self) -> Result<StateCounts, IndexError> {
        let mut out = BTreeMap::new();
        for (name, sql) in [
            (
                "series",
                "SELECT state, COUNT(*) AS n FROM series GROUP BY state",
            ),
            (
                "jobs",
                "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state",
            ),
            (
                "outbox",
                "SELECT state, COUNT(*) AS n FROM outbox GROUP BY state",
            ),
        ] {
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            let mut m = BTreeMap::new();
            for r in rows {
                m.insert(r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?);
            }
            out.insert(name, m);
        }
        Ok(out)
    }
}
