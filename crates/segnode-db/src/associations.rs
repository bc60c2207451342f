//! The association journal (`associations`): each DICOM association a receiver accepted, who held
//! it (`node`) and how it ended. The completion tracker reads it as evidence (has every association
//! that carried a series ended, one of them normally?), and a restarted receiver closes the ones its
//! previous run left open.

use sqlx::Row;

use crate::error::IndexError;
use crate::pool::Index;
use crate::state::AssociationState;
use crate::time::now_ms;

/// One association as recorded.
#[derive(Debug, Clone)]
pub struct AssociationRecord {
    pub id: String,
    /// The receiver process that holds it (`node.name`).
    pub node: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
}

/// The instances one association filed into one series (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FiledSeries {
    pub study_uid: String,
    pub series_uid: String,
    pub instances: i64,
}

impl Index {
    /// The series an association filed instances into, with how many each.
    pub async fn association_series(&self, id: &str) -> Result<Vec<FiledSeries>, IndexError> {
        let rows = sqlx::query(
            "SELECT study_uid, series_uid, COUNT(*) AS n FROM instances WHERE association_id = $1
             GROUP BY study_uid, series_uid ORDER BY series_uid",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FiledSeries {
                    study_uid: r.try_get("study_uid")?,
                    series_uid: r.try_get("series_uid")?,
                    instances: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// Record a new association.
    pub async fn begin_association(&self, a: &AssociationRecord) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO associations (id, calling_ae, called_ae, peer, state, started_ms, instances, bytes, node)
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7)",
        )
        .bind(&a.id)
        .bind(&a.calling_ae)
        .bind(&a.called_ae)
        .bind(&a.peer)
        .bind(AssociationState::Open.as_str())
        .bind(now_ms())
        .bind(&a.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Record the end of an association.
    pub async fn end_association(
        &self,
        id: &str,
        state: AssociationState,
        instances: i64,
        bytes: i64,
        outcome: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE associations SET state = $1, ended_ms = $2, instances = $3, bytes = $4, outcome = $5
             WHERE id = $6",
        )
        .bind(state.as_str())
        .bind(now_ms())
        .bind(instances)
        .bind(bytes)
        .bind(outcome)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// At start of receiver `node`: its associations still OPEN belong to its previous run, which died;
    /// they ended without a release. (Other receivers' associations on a shared database are theirs.)
    pub async fn close_orphaned_associations(&self, node: &str) -> Result<u64, IndexError> {
        let r = sqlx::query(
            "UPDATE associations SET state = $1, ended_ms = $2, outcome = 'node restarted'
             WHERE state = $3 AND (node = $4 OR node IS NULL)",
        )
        .bind(AssociationState::Aborted.as_str())
        .bind(now_ms())
        .bind(AssociationState::Open.as_str())
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The associations that delivered instances of this series revision (each once): how each
    /// ended, and who held it.
    pub async fn series_carriers(
        &self,
        series_uid: &str,
        revision: i64,
    ) -> Result<Vec<Carrier>, IndexError> {
        let rows = sqlx::query(
            "SELECT DISTINCT a.id AS id, a.state AS state, a.calling_ae AS calling_ae, a.peer AS peer
             FROM instances i JOIN associations a ON a.id = i.association_id
             WHERE i.series_uid = $1 AND i.revision = $2",
        )
        .bind(series_uid)
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(carrier).collect()
    }

    /// Every association open now, on any receiver sharing this database.
    pub async fn open_associations(&self) -> Result<Vec<Carrier>, IndexError> {
        let rows =
            sqlx::query("SELECT id, state, calling_ae, peer FROM associations WHERE state = $1")
                .bind(AssociationState::Open.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(carrier).collect()
    }
}

/// An association as the completion tracker weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    pub id: String,
    pub state: AssociationState,
    pub calling_ae: String,
    /// `address:port` of the peer.
    pub peer: String,
}

impl Carrier {
    /// The peer's address without the port (a sender's next association comes from another port).
    pub fn host(&self) -> &str {
        match self.peer.rsplit_once(':') {
            // `[v6]:port` or `v4:port`
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                host.trim_start_matches('[').trim_end_matches(']')
            }
            _ => &self.peer,
        }
    }
}

fn carrier(r: &sqlx::any::AnyRow) -> Result<Carrier, IndexError> {
    Ok(Carrier {
        id: r.try_get("id")?,
        state: AssociationState::from_column(r.try_get("state")?)?,
        calling_ae: r.try_get("calling_ae")?,
        peer: r.try_get("peer")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(peer: &str) -> Carrier {
        Carrier {
            id: "a".into(),
            state: AssociationState::Open,
            calling_ae: "X".into(),
            peer: peer.into(),
        }
    }

    #[test]
    fn host_drops_the_port() {
        assert_eq!(c("127.0.0.1:4242").host(), "127.0.0.1");
        assert_eq!(c("[::1]:104").host(), "::1");
        assert_eq!(c("pacs.example").host(), "pacs.example");
    }
}
