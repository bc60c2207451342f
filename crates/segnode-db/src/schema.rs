//! The schema: the versioned migrations applied at start, and the conditions of the partial indexes,
//! each defined once.
//!
//! The polled queries (unrouted series, live jobs, live and unpurged deliveries) look at the few live
//! rows, not at months of history, through partial indexes. SQLite uses a partial index only when the
//! query's WHERE clause repeats the index's condition term for term, so each condition is one macro
//! (for `concat!` into constant SQL) and one `const` (for `format!`) below: the `CREATE INDEX … WHERE`
//! of migration 5 and the queries of [`crate::routing`], [`crate::jobs`] and [`crate::outbox`] are all
//! built from the same text.
//!
//! Migrations are append-only: an existing database has recorded the versions it applied in
//! `schema_version`, and its schema text (SQLite keeps each statement as written) must stay what these
//! constants produce. A test pins migration 5 to the text it had before the conditions were factored
//! out.

use sqlx::{AnyPool, Row};

use crate::error::IndexError;
use crate::options::Backend;

/// Condition of `series_unrouted`: complete series revisions not routed yet.
macro_rules! series_unrouted {
    () => {
        "state = 'COMPLETE' AND (routed_revision IS NULL OR routed_revision < revision)"
    };
}
/// Condition of `jobs_live`: jobs a worker may claim now or later.
macro_rules! jobs_live {
    () => {
        "state IN ('QUEUED', 'FAILED', 'RUNNING')"
    };
}
/// Condition of `outbox_unpurged`: deliveries whose result file is still on disk.
macro_rules! outbox_unpurged {
    () => {
        "purged_ms IS NULL"
    };
}
/// Condition of `outbox_live`: deliveries waiting for or in the middle of a send.
macro_rules! outbox_live {
    () => {
        "state IN ('PENDING', 'SENDING')"
    };
}
pub(crate) use {jobs_live, outbox_live, outbox_unpurged, series_unrouted};

/// Condition of the partial index `series_unrouted` (table `series`).
pub const SERIES_UNROUTED: &str = series_unrouted!();
/// Condition of the partial index `jobs_live` (table `jobs`).
pub const JOBS_LIVE: &str = jobs_live!();
/// Condition of the partial index `outbox_unpurged` (table `outbox`).
pub const OUTBOX_UNPURGED: &str = outbox_unpurged!();
/// Condition of the partial index `outbox_live` (table `outbox`).
pub const OUTBOX_LIVE: &str = outbox_live!();

/// Versioned schema; `{ID}` is the auto-increment key of the backend. Version n is `MIGRATIONS[n-1]`.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    patient_id TEXT,
    patient_name TEXT,
    study_date TEXT,
    modality TEXT,
    body_part TEXT,
    series_description TEXT,
    protocol_name TEXT,
    series_number BIGINT,
    frame_of_reference_uid TEXT,
    calling_ae TEXT,
    called_ae TEXT,
    revision BIGINT NOT NULL,
    state TEXT NOT NULL,
    completion_reason TEXT,
    expected_instances BIGINT,
    instance_count BIGINT NOT NULL,
    first_received_ms BIGINT NOT NULL,
    last_received_ms BIGINT NOT NULL,
    completed_ms BIGINT
);
CREATE INDEX series_state ON series (state);
CREATE TABLE instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    revision BIGINT NOT NULL,
    instance_number BIGINT,
    acquisition_number BIGINT,
    images_in_acquisition BIGINT,
    number_of_frames BIGINT,
    rows_ BIGINT,
    columns_ BIGINT,
    ipp TEXT,
    iop TEXT,
    pixel_spacing TEXT,
    slice_thickness DOUBLE PRECISION,
    association_id TEXT,
    calling_ae TEXT,
    called_ae TEXT,
    peer TEXT,
    received_ms BIGINT NOT NULL,
    path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE INDEX instances_series ON instances (series_uid);
CREATE TABLE associations (
    id TEXT PRIMARY KEY,
    calling_ae TEXT NOT NULL,
    called_ae TEXT NOT NULL,
    peer TEXT NOT NULL,
    state TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    instances BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    outcome TEXT
);
CREATE TABLE series_events (
    id {ID},
    series_uid TEXT NOT NULL,
    revision BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX series_events_series ON series_events (series_uid);
"#,
    r#"
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    revision BIGINT NOT NULL,
    pipeline TEXT NOT NULL,
    rules TEXT NOT NULL,
    destinations TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_ms BIGINT,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    error TEXT,
    result TEXT,
    UNIQUE (series_uid, revision, pipeline)
);
CREATE INDEX jobs_state ON jobs (state, not_before_ms);
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    revision BIGINT NOT NULL,
    destination TEXT NOT NULL,
    path TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    last_status TEXT,
    error TEXT,
    created_ms BIGINT NOT NULL,
    sent_ms BIGINT
);
CREATE INDEX outbox_state ON outbox (state, destination);
ALTER TABLE series ADD COLUMN routed_revision BIGINT;
"#,
    // the node (receiver process) that holds an association: a restarted receiver closes only its own
    r#"
ALTER TABLE associations ADD COLUMN node TEXT;
CREATE INDEX associations_state ON associations (state, node);
CREATE INDEX instances_association ON instances (association_id);
"#,
    // result files removed after delivery (dispatch.keep_sent_h)
    r#"
ALTER TABLE outbox ADD COLUMN purged_ms BIGINT;
"#,
    // the polled queries look at the few live rows, not at months of history: partial indexes whose
    // conditions the queries repeat word for word (SQLite uses a partial index only then)
    concat!(
        "\nCREATE INDEX series_unrouted ON series (first_received_ms)\n    WHERE ",
        series_unrouted!(),
        ";\nCREATE INDEX jobs_live ON jobs (created_ms) WHERE ",
        jobs_live!(),
        ";\nCREATE INDEX outbox_unpurged ON outbox (path) WHERE ",
        outbox_unpurged!(),
        ";\nCREATE INDEX outbox_live ON outbox (destination, created_ms) WHERE ",
        outbox_live!(),
        ";\n"
    ),
    // the processes sharing the database (receivers, workers), each seen by its heartbeat
    r#"
CREATE TABLE nodes (
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    version TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    PRIMARY KEY (name, role)
);
"#,
    // completion at release (issue 16): a revision completed the moment its association was released
    // is marked, so that a late instance of it from the same caller teaches the tracker that this
    // caller splits series over associations (`splitting_callers`: it gets the settle wait from then on)
    r#"
ALTER TABLE series ADD COLUMN completed_at_release BIGINT;
CREATE TABLE splitting_callers (
    calling_ae TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    learnt_ms BIGINT NOT NULL
);
"#,
];

/// Key of the PostgreSQL advisory lock that serialises migrations of processes starting together.
const MIGRATION_LOCK: i64 = 0x5e9_0de1;

/// Apply the migrations the database lacks, in one transaction: processes starting together against
/// one PostgreSQL wait for each other (advisory lock), and a failed migration leaves the schema as it
/// was.
pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), IndexError> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        let lock = format!("DO $$ BEGIN PERFORM pg_advisory_xact_lock({MIGRATION_LOCK}); END $$");
        // constant text
        sqlx::query(sqlx::AssertSqlSafe(lock))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_version")
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
    let current = current.unwrap_or(0) as usize;
    let id = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current) {
        let ddl = m.replace("{ID}", id);
        for stmt in ddl.split(';') {
            if !stmt.trim().is_empty() {
                // the schema text is ours (constants above), not input
                sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind((i + 1) as i64)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = i + 1, "index schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// The versions recorded in `schema_version`, one entry per recorded application.
pub(crate) async fn applied_versions(pool: &AnyPool) -> Result<Vec<i64>, IndexError> {
    let rows = sqlx::query("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("version").map_err(IndexError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DeliveryState, JobState, SeriesState};

    /// Migration 5 as it was written before its conditions were factored out: databases created
    /// since hold this text in their schema.
    const MIGRATION_5_AS_APPLIED: &str = r#"
CREATE INDEX series_unrouted ON series (first_received_ms)
    WHERE state = 'COMPLETE' AND (routed_revision IS NULL OR routed_revision < revision);
CREATE INDEX jobs_live ON jobs (created_ms) WHERE state IN ('QUEUED', 'FAILED', 'RUNNING');
CREATE INDEX outbox_unpurged ON outbox (path) WHERE purged_ms IS NULL;
CREATE INDEX outbox_live ON outbox (destination, created_ms) WHERE state IN ('PENDING', 'SENDING');
"#;

    #[test]
    fn migration_5_is_unchanged() {
        assert!(MIGRATIONS.len() >= 5);
        assert_eq!(MIGRATIONS[4], MIGRATION_5_AS_APPLIED);
    }

    /// The quoted literals of a condition.
    fn literals(cond: &str) -> Vec<&str> {
        cond.split('\'').skip(1).step_by(2).collect()
    }

    #[test]
    fn conditions_name_only_real_states() {
        let series = literals(SERIES_UNROUTED);
        assert_eq!(series, vec![SeriesState::Complete.as_str()]);
        let jobs = literals(JOBS_LIVE);
        assert_eq!(
            jobs,
            [JobState::Queued, JobState::Failed, JobState::Running].map(JobState::as_str)
        );
        let outbox = literals(OUTBOX_LIVE);
        assert_eq!(
            outbox,
            [DeliveryState::Pending, DeliveryState::Sending].map(DeliveryState::as_str)
        );
        assert!(literals(OUTBOX_UNPURGED).is_empty());
    }
}
