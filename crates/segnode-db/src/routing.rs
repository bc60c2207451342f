//! What routing reads and writes: the facts of a series that rules match on, the complete revisions
//! not routed yet, and the claim of one revision's routing — its jobs and history entries committed
//! together with the claim, so that with any number of routers on one database each revision is
//! routed exactly once and a crash routes nothing half-way. The rules themselves are the
//! application's.

use sqlx::Row;

use crate::error::IndexError;
use crate::events::insert_event;
use crate::instances::parse_floats;
use crate::jobs::insert_job;
use crate::notify::Topic;
use crate::pool::Index;
use crate::schema::series_unrouted;
use crate::state::SeriesState;
use crate::time::now_ms;

/// Facts of a series for routing: series attributes plus the first instance's geometry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesFactsRecord {
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    pub slice_thickness: Option<f64>,
    pub orientation: Option<[f64; 6]>,
    pub calling_ae: Option<String>,
    pub called_ae: Option<String>,
    /// Instances, counting each frame of a multi-frame instance.
    pub slices: i64,
    /// The distinct SOP classes of the series' instances.
    pub sop_classes: Vec<String>,
}

/// A complete series revision waiting to be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrouted {
    pub series_uid: String,
    pub revision: i64,
}

/// One pipeline a revision is routed to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutedJob<'a> {
    pub pipeline: &'a str,
    /// The rules that chose it.
    pub rules: &'a [String],
    pub destinations: &'a [String],
}

impl Index {
    /// Facts of a series for routing; `slices` counts the frames of multi-frame instances (an
    /// Enhanced CT of 300 frames is 300 slices).
    pub async fn series_facts(
        &self,
        series_uid: &str,
    ) -> Result<Option<SeriesFactsRecord>, IndexError> {
        let Some(s) = sqlx::query(
            "SELECT modality, body_part, series_description, protocol_name, calling_ae, called_ae, instance_count
             FROM series WHERE series_uid = $1",
        )
        .bind(series_uid)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let first = sqlx::query(
            "SELECT iop, slice_thickness FROM instances WHERE series_uid = $1 ORDER BY instance_number LIMIT 1",
        )
        .bind(series_uid)
        .fetch_optional(&self.pool)
        .await?;
        let (orientation, slice_thickness) = match first {
            Some(r) => (
                parse_floats::<6>(r.try_get("iop")?),
                r.try_get::<Option<f64>, _>("slice_thickness")?,
            ),
            None => (None, None),
        };
        let extra_frames: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(number_of_frames - 1), 0) AS BIGINT) AS n
             FROM instances WHERE series_uid = $1 AND number_of_frames > 1",
        )
        .bind(series_uid)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let sop_classes = sqlx::query(
            "SELECT DISTINCT sop_class_uid FROM instances WHERE series_uid = $1 ORDER BY sop_class_uid",
        )
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("sop_class_uid"))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(SeriesFactsRecord {
            sop_classes,
            modality: s.try_get("modality")?,
            body_part: s.try_get("body_part")?,
            series_description: s.try_get("series_description")?,
            protocol_name: s.try_get("protocol_name")?,
            slice_thickness,
            orientation,
            calling_ae: s.try_get("calling_ae")?,
            called_ae: s.try_get("called_ae")?,
            slices: s.try_get::<i64, _>("instance_count")? + extra_frames,
        }))
    }

    /// Every COMPLETE series revision not routed yet, oldest first (the partial index
    /// `series_unrouted` keeps this cheap).
    pub async fn unrouted_series(&self) -> Result<Vec<Unrouted>, IndexError> {
        let rows = sqlx::query(concat!(
            "SELECT series_uid, revision FROM series WHERE ",
            series_unrouted!(),
            " ORDER BY first_received_ms"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Unrouted {
                    series_uid: r.try_get("series_uid")?,
                    revision: r.try_get("revision")?,
                })
            })
            .collect()
    }

    /// Claim the routing of a complete revision and, in the same transaction, create its `jobs` and
    /// append one `routed` history entry per line of `history`; wake the workers when a job was
    /// created. Returns None when the revision was not this call's to route (another router took it,
    /// or it is no longer complete), else how many jobs were created (an existing job of the same
    /// pipeline is kept).
    pub async fn claim_routing(
        &self,
        series_uid: &str,
        revision: i64,
        jobs: &[RoutedJob<'_>],
        history: &[String],
    ) -> Result<Option<usize>, IndexError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE series SET routed_revision = $1 WHERE series_uid = $2 AND revision = $1
                AND state = $3 AND (routed_revision IS NULL OR routed_revision < $1)",
        )
        .bind(revision)
        .bind(series_uid)
        .bind(SeriesState::Complete.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = now_ms();
        for detail in history {
            insert_event(&mut tx, series_uid, revision, now, "routed", detail).await?;
        }
        let mut created = 0;
        for j in jobs {
            if insert_job(
                &mut tx,
                series_uid,
                revision,
                j.pipeline,
                j.rules,
                j.destinations,
            )
            .await?
            {
                created += 1;
            }
        }
        if created > 0 {
            self.notify_in(&mut tx, Topic::Jobs).await?;
        }
        tx.commit().await?;
        if created > 0 {
            self.wakeups.ring(Topic::Jobs);
        }
        Ok(Some(created))
    }
}
