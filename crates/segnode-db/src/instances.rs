//! Instance filing (`instances`, and the series row each instance creates, updates or reopens): one
//! transaction per stored instance, the duplicate look-up, the take-back of a row whose file could not
//! be published, and the per-instance reads (slice geometry for the stack check, the listing of
//! `segnode series show`, the paths the start-up reconciliation compares with the store).
//!
//! Multi-valued decimal attributes (positions, orientations, spacings) are kept as DICOM writes them,
//! `\`-separated text; [`parse_floats`] reads them back.

use sqlx::Row;

use crate::error::IndexError;
use crate::events::insert_event;
use crate::pool::Index;
use crate::state::SeriesState;
use crate::time::now_ms;

/// Everything recorded about a stored instance (borrowed from the caller's own record).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NewInstance<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub study_uid: &'a str,
    pub series_uid: &'a str,
    pub patient_id: Option<&'a str>,
    pub patient_name: Option<&'a str>,
    pub study_date: Option<&'a str>,
    pub modality: Option<&'a str>,
    pub body_part: Option<&'a str>,
    pub series_description: Option<&'a str>,
    pub protocol_name: Option<&'a str>,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub acquisition_number: Option<i64>,
    pub images_in_acquisition: Option<i64>,
    pub number_of_frames: Option<i64>,
    pub frame_of_reference_uid: Option<&'a str>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub ipp: Option<[f64; 3]>,
    pub iop: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    /// The transfer syntax it was received (and stored) in.
    pub transfer_syntax: &'a str,
    pub association_id: &'a str,
    pub calling_ae: &'a str,
    pub called_ae: &'a str,
    pub peer: &'a str,
    /// Relative to the storage directory.
    pub path: &'a str,
    pub size_bytes: i64,
    pub content_hash: &'a str,
}

/// What recording an instance did to its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    pub revision: i64,
    pub new_series: bool,
    /// The series was COMPLETE and this instance opened a new revision.
    pub reopened: bool,
}

/// Slice geometry of one instance, as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRecord {
    pub sop_uid: String,
    pub ipp: Option<[f64; 3]>,
    pub iop: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub number_of_frames: Option<i64>,
}

/// One instance as listed by `segnode series show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceSummary {
    pub sop_uid: String,
    pub revision: i64,
    pub instance_number: Option<i64>,
    pub transfer_syntax: String,
    pub calling_ae: Option<String>,
    pub received_ms: i64,
    /// Relative to the storage directory.
    pub path: String,
    pub size_bytes: i64,
}

fn join_floats(v: &[f64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("\\")
}

/// A `\`-separated decimal list of exactly `N` values (anything else reads as absent).
pub(crate) fn parse_floats<const N: usize>(s: Option<String>) -> Option<[f64; N]> {
    let v: Vec<f64> = s?
        .split('\\')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    v.try_into().ok()
}

/// Where an indexed instance's file is (start-up reconciliation).
#[derive(Debug, Clone)]
pub struct IndexedFile {
    pub path: String,
    pub sop_uid: String,
    pub series_uid: String,
    /// The series revision the instance belongs to.
    pub revision: i64,
}

impl Index {
    /// The content hash and path of an instance already stored, if any.
    pub async fn instance_hash(
        &self,
        sop_uid: &str,
    ) -> Result<Option<(String, String)>, IndexError> {
        let row = sqlx::query("SELECT content_hash, path FROM instances WHERE sop_uid = $1")
            .bind(sop_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("content_hash")?, r.try_get("path")?)),
            None => None,
        })
    }

    /// Record a stored instance (new or replacing one with the same SOP Instance UID), creating or
    /// updating its series; a COMPLETE series is reopened as a new revision.
    pub async fn record_instance<'a>(
        &self,
        rec: impl Into<NewInstance<'a>>,
    ) -> Result<RecordOutcome, IndexError> {
        let h: NewInstance<'a> = rec.into();
        let mut tx = self.pool.begin().await?;
        let outcome = record_in(&mut tx, &h, now_ms()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Record a batch of stored instances in one transaction (the journal's materialiser: one commit
    /// per batch instead of one per instance), in order; the outcomes in the same order. All or none.
    pub async fn record_instances(
        &self,
        recs: &[NewInstance<'_>],
    ) -> Result<Vec<RecordOutcome>, IndexError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(recs.len());
        for h in recs {
            out.push(record_in(&mut tx, h, now_ms()).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The content hash and path of every stored instance among `sop_uids` (one query; the journal's
    /// materialiser resolves a batch's duplicates with it).
    pub async fn instance_hashes(
        &self,
        sop_uids: &[&str],
    ) -> Result<std::collections::HashMap<String, (String, String)>, IndexError> {
        let mut out = std::collections::HashMap::new();
        // bounded statements: SQLite's limit on bound parameters is far above this
        for chunk in sop_uids.chunks(200) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT sop_uid, content_hash, path FROM instances WHERE sop_uid IN ({})",
                marks.join(", ")
            );
            // only numbered placeholders are formatted into it
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for u in chunk {
                q = q.bind(*u);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.insert(
                    r.try_get("sop_uid")?,
                    (r.try_get("content_hash")?, r.try_get("path")?),
                );
            }
        }
        Ok(out)
    }
}

/// One instance inside the caller's transaction (see [`Index::record_instance`]).
async fn record_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    h: &NewInstance<'_>,
    now: i64,
) -> Result<RecordOutcome, IndexError> {
    let h = *h;
    {
        // One statement for the usual case, a series already known: note the arrival (counted as a new
        // SOP instance; a replaced one is recounted below) and read the series' state. The UPDATE also
        // locks the row for the rest of the transaction (PostgreSQL; SQLite has one writer anyway), so
        // that a completion or reopening by another process cannot interleave with this instance.
        let touch = || {
            sqlx::query(
                "UPDATE series SET last_received_ms = $1,
                    instance_count = instance_count + 1,
                    expected_instances = COALESCE($3, expected_instances),
                    modality = COALESCE(modality, $4), body_part = COALESCE(body_part, $5),
                    series_description = COALESCE(series_description, $6)
                 WHERE series_uid = $2
                 RETURNING state, revision, completed_at_release, completed_ms, calling_ae",
            )
            .bind(now)
            .bind(h.series_uid)
            .bind(h.images_in_acquisition.filter(|n| *n > 0))
            .bind(h.modality)
            .bind(h.body_part)
            .bind(h.series_description)
        };
        let mut existing = touch().fetch_optional(&mut **tx).await?;
        let mut created = false;
        if existing.is_none() {
            // a new series; on a shared database two receivers may race for it: ON CONFLICT lets
            // exactly one create it, and both then note their instance on the row
            created = sqlx::query(
                "INSERT INTO series (series_uid, study_uid, patient_id, patient_name, study_date, modality,
                    body_part, series_description, protocol_name, series_number, frame_of_reference_uid,
                    calling_ae, called_ae, revision, state, instance_count, first_received_ms,
                    last_received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14, 0, $15, $15)
                 ON CONFLICT (series_uid) DO NOTHING",
            )
            .bind(h.series_uid)
            .bind(h.study_uid)
            .bind(h.patient_id)
            .bind(h.patient_name)
            .bind(h.study_date)
            .bind(h.modality)
            .bind(h.body_part)
            .bind(h.series_description)
            .bind(h.protocol_name)
            .bind(h.series_number)
            .bind(h.frame_of_reference_uid)
            .bind(h.calling_ae)
            .bind(h.called_ae)
            .bind(SeriesState::Receiving.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            existing = touch().fetch_optional(&mut **tx).await?;
        }
        let mut outcome = RecordOutcome {
            revision: 1,
            new_series: false,
            reopened: false,
        };
        match existing.filter(|_| !created) {
            None => {
                outcome.new_series = true;
                insert_event(
                    tx,
                    h.series_uid,
                    1,
                    now,
                    "received",
                    &format!("first instance from {} ({})", h.calling_ae, h.peer),
                )
                .await?;
            }
            Some(row) => {
                let state = SeriesState::from_column(row.try_get("state")?)?;
                let revision: i64 = row.try_get("revision")?;
                outcome.revision = revision;
                // a late instance of a finished series (files purged or not) opens a new revision
                if matches!(
                    state,
                    SeriesState::Complete | SeriesState::Purging | SeriesState::Purged
                ) {
                    outcome.revision = revision + 1;
                    outcome.reopened = true;
                    sqlx::query(
                        "UPDATE series SET revision = $1, state = $2, completion_reason = NULL,
                            completed_ms = NULL WHERE series_uid = $3",
                    )
                    .bind(outcome.revision)
                    .bind(SeriesState::Receiving.as_str())
                    .bind(h.series_uid)
                    .execute(&mut **tx)
                    .await?;
                    insert_event(
                        tx,
                        h.series_uid,
                        outcome.revision,
                        now,
                        "revision",
                        &format!(
                            "revision {} opened by instance {} arriving after completion",
                            outcome.revision, h.sop_instance_uid
                        ),
                    )
                    .await?;
                    let at_release: Option<i64> = row.try_get("completed_at_release")?;
                    let completed_ms: Option<i64> = row.try_get("completed_ms")?;
                    let first_caller: Option<String> = row.try_get("calling_ae")?;
                    if state == SeriesState::Complete
                        && at_release == Some(1)
                        && completed_ms.is_some_and(|t| now - t <= SPLIT_LEARN_WINDOW_MS)
                        && first_caller.as_deref() == Some(h.calling_ae)
                    {
                        learn_splitting_caller(
                            tx,
                            h.series_uid,
                            outcome.revision,
                            h.calling_ae,
                            now,
                        )
                        .await?;
                    }
                }
            }
        }
        // a new SOP Instance UID (the usual case) added one to the series' count above; a replaced one
        // (same UID, new content) recounts the series it left and the one it joined
        let inserted = bind_instance(
            sqlx::query(
                "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid, transfer_syntax,
                    revision, instance_number, acquisition_number, images_in_acquisition, number_of_frames,
                    rows_, columns_, ipp, iop, pixel_spacing, slice_thickness, association_id, calling_ae,
                    called_ae, peer, received_ms, path, size_bytes, content_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                    $19, $20, $21, $22, $23, $24)
                 ON CONFLICT (sop_uid) DO NOTHING",
            ),
            &h,
            outcome.revision,
            now,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        let mut recount: Vec<String> = Vec::new();
        if !inserted {
            let previous: Option<String> =
                sqlx::query("SELECT series_uid FROM instances WHERE sop_uid = $1")
                    .bind(h.sop_instance_uid)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.try_get("series_uid"))
                    .transpose()?;
            bind_instance(
                sqlx::query(
                    "UPDATE instances SET series_uid = $2, study_uid = $3, sop_class_uid = $4,
                        transfer_syntax = $5, revision = $6, instance_number = $7, acquisition_number = $8,
                        images_in_acquisition = $9, number_of_frames = $10, rows_ = $11, columns_ = $12,
                        ipp = $13, iop = $14, pixel_spacing = $15, slice_thickness = $16,
                        association_id = $17, calling_ae = $18, called_ae = $19, peer = $20,
                        received_ms = $21, path = $22, size_bytes = $23, content_hash = $24
                     WHERE sop_uid = $1",
                ),
                &h,
                outcome.revision,
                now,
            )
            .execute(&mut **tx)
            .await?;
            recount.push(h.series_uid.to_string());
            recount.extend(previous.filter(|p| p != h.series_uid));
        }
        for uid in &recount {
            recount_series(tx, uid).await?;
        }
        Ok(outcome)
    }
}

impl Index {
    /// Take an instance row back out (its file could not be published).
    pub async fn forget_instance(&self, sop_uid: &str, series_uid: &str) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM instances WHERE sop_uid = $1")
            .bind(sop_uid)
            .execute(&mut *tx)
            .await?;
        recount_series(&mut tx, series_uid).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Geometry of every instance of a series.
    pub async fn series_slices(&self, series_uid: &str) -> Result<Vec<SliceRecord>, IndexError> {
        let rows = sqlx::query(
            "SELECT sop_uid, ipp, iop, pixel_spacing, rows_, columns_, number_of_frames
             FROM instances WHERE series_uid = $1",
        )
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SliceRecord {
                    sop_uid: r.try_get("sop_uid")?,
                    ipp: parse_floats(r.try_get("ipp")?),
                    iop: parse_floats(r.try_get("iop")?),
                    pixel_spacing: parse_floats(r.try_get("pixel_spacing")?),
                    rows: r.try_get("rows_")?,
                    columns: r.try_get("columns_")?,
                    number_of_frames: r.try_get("number_of_frames")?,
                })
            })
            .collect()
    }

    /// Every indexed instance file: path (relative to the store), SOP Instance UID, series and revision
    /// (the start-up reconciliation with the store).
    pub async fn indexed_files(&self) -> Result<Vec<IndexedFile>, IndexError> {
        let rows = sqlx::query("SELECT path, sop_uid, series_uid, revision FROM instances")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IndexedFile {
                    path: r.try_get("path")?,
                    sop_uid: r.try_get("sop_uid")?,
                    series_uid: r.try_get("series_uid")?,
                    revision: r.try_get("revision")?,
                })
            })
            .collect()
    }

    /// The instances of a series, in order of arrival.
    pub async fn series_instances(
        &self,
        series_uid: &str,
    ) -> Result<Vec<InstanceSummary>, IndexError> {
        let rows = sqlx::query(
            "SELECT sop_uid, revision, instance_number, transfer_syntax, calling_ae, received_ms, path,
                size_bytes FROM instances WHERE series_uid = $1 ORDER BY received_ms, sop_uid",
        )
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceSummary {
                    sop_uid: r.try_get("sop_uid")?,
                    revision: r.try_get("revision")?,
                    instance_number: r.try_get("instance_number")?,
                    transfer_syntax: r.try_get("transfer_syntax")?,
                    calling_ae: r.try_get("calling_ae")?,
                    received_ms: r.try_get("received_ms")?,
                    path: r.try_get("path")?,
                    size_bytes: r.try_get("size_bytes")?,
                })
            })
            .collect()
    }

    /// The folder of a series in the store (relative), from one of its instances.
    pub async fn series_dir(&self, series_uid: &str) -> Result<Option<String>, IndexError> {
        let r = sqlx::query("SELECT path FROM instances WHERE series_uid = $1 LIMIT 1")
            .bind(series_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => {
                let p: String = r.try_get("path")?;
                std::path::Path::new(&p)
                    .parent()
                    .map(|d| d.to_string_lossy().into_owned())
            }
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_lists_round_trip() {
        let iop = [1.0, 0.0, 0.0, 0.0, 0.99, -0.01];
        assert_eq!(parse_floats::<6>(Some(join_floats(&iop))), Some(iop));
        assert_eq!(parse_floats::<3>(Some("1\\2".into())), None);
        assert_eq!(parse_floats::<2>(None), None);
    }
}

/// A late instance from the same caller within this time of a completion at release means that the
/// caller splits series over associations (ms): such a sender opens its next association within
/// seconds of the last; an instance a minute or more later is a late addition, not a split.
pub const SPLIT_LEARN_WINDOW_MS: i64 = 60_000;

/// Record that `calling_ae` splits series over associations (once; the tracker gives it the settle wait
/// from now on), with the reason in the series history.
async fn learn_splitting_caller(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    series_uid: &str,
    revision: i64,
    calling_ae: &str,
    now: i64,
) -> Result<(), IndexError> {
    let learnt = sqlx::query(
        "INSERT INTO splitting_callers (calling_ae, series_uid, learnt_ms) VALUES ($1, $2, $3)
         ON CONFLICT (calling_ae) DO NOTHING",
    )
    .bind(calling_ae)
    .bind(series_uid)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if learnt {
        insert_event(
            tx,
            series_uid,
            revision,
            now,
            "learnt",
            &format!(
                "{calling_ae} sent more of this series after it completed at release: it splits series \
                 over associations and gets the settle wait from now on"
            ),
        )
        .await?;
    }
    Ok(())
}

/// Bind an instance row's 24 columns, `$1` = SOP Instance UID … `$24` = content hash, in the order of
/// the `INSERT` and `UPDATE` of [`Index::record_instance`].
fn bind_instance<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    h: &NewInstance<'q>,
    revision: i64,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(h.sop_instance_uid)
        .bind(h.series_uid)
        .bind(h.study_uid)
        .bind(h.sop_class_uid)
        .bind(h.transfer_syntax)
        .bind(revision)
        .bind(h.instance_number)
        .bind(h.acquisition_number)
        .bind(h.images_in_acquisition)
        .bind(h.number_of_frames)
        .bind(h.rows)
        .bind(h.columns)
        .bind(h.ipp.map(|v| join_floats(&v)))
        .bind(h.iop.map(|v| join_floats(&v)))
        .bind(h.pixel_spacing.map(|v| join_floats(&v)))
        .bind(h.slice_thickness)
        .bind(h.association_id)
        .bind(h.calling_ae)
        .bind(h.called_ae)
        .bind(h.peer)
        .bind(now)
        .bind(h.path)
        .bind(h.size_bytes)
        .bind(h.content_hash)
}

/// Set a series' instance count from its rows (after a take-back or a replacement; a new instance
/// adds one instead of recounting).
async fn recount_series(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    series_uid: &str,
) -> Result<(), IndexError> {
    sqlx::query(
        "UPDATE series SET instance_count = (SELECT COUNT(*) FROM instances WHERE series_uid = $1)
         WHERE series_uid = $1",
    )
    .bind(series_uid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
