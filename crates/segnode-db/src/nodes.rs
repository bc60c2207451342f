//! The processes that share one database — receivers (`segnode serve`) and workers (`segnode worker`) —
//! as rows of `nodes`, each kept fresh by its own heartbeat, so the console of any of them can show all
//! of them and when each was last seen. Only rows: no messages between nodes.

use sqlx::Row;

use crate::error::IndexError;
use crate::pool::Index;
use crate::time::now_ms;

/// How often a process refreshes its row (ms); a row younger than three of these is a process alive.
pub const HEARTBEAT_MS: i64 = 10_000;

/// One process as its heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    pub name: String,
    /// `serve` or `worker`.
    pub role: String,
    pub version: String,
    pub pid: i64,
    pub started_ms: i64,
    pub seen_ms: i64,
}

impl Index {
    /// Record that this process is alive (insert or refresh its row).
    pub async fn heartbeat(
        &self,
        name: &str,
        role: &str,
        version: &str,
        started_ms: i64,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO nodes (name, role, version, pid, started_ms, seen_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name, role) DO UPDATE SET version = $3, pid = $4, started_ms = $5, seen_ms = $6",
        )
        .bind(name)
        .bind(role)
        .bind(version)
        .bind(std::process::id() as i64)
        .bind(started_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every process that ever shared this database, most recently seen first.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, IndexError> {
        let rows = sqlx::query(
            "SELECT name, role, version, pid, started_ms, seen_ms FROM nodes ORDER BY seen_ms DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRecord {
                    name: r.try_get("name")?,
                    role: r.try_get("role")?,
                    version: r.try_get("version")?,
                    pid: r.try_get("pid")?,
                    started_ms: r.try_get("started_ms")?,
                    seen_ms: r.try_get("seen_ms")?,
                })
            })
            .collect()
    }
}
