//! The index: instances, series, associations and each series' history, in one SQL database.
//!
//! One code path serves SQLite (embedded, the default) and PostgreSQL (scale-out) through sqlx's `Any`
//! driver: the SQL is kept portable (`$n` parameters, `ON CONFLICT`, BIGINT / DOUBLE PRECISION / TEXT
//! only) and the schema is versioned, applied at start. Times are milliseconds since the Unix epoch.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` behind a single connection: a killed process
//! loses no committed row (the WAL is in the OS cache), and the instance files, which are fsync'd before
//! any success status, are the ground truth that [`Index::reconcile`] re-indexes at start.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::header::InstanceHeader;
use super::wakeup::{Topic, Wakeups};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database url `{0}`: {1}")]
    Url(String, String),
    #[error("{0}")]
    Gone(String),
}

impl IndexError {
    /// The database could not be reached (down, restarting, overloaded) — as opposed to a statement
    /// that failed on a reachable database.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            IndexError::Db(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
            )
        )
    }
}

/// Which engine is behind the pool (DDL differs in one place: auto-increment keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Series states.
pub const RECEIVING: &str = "RECEIVING";
pub const COMPLETE: &str = "COMPLETE";

/// Association states.
pub const ASSOC_OPEN: &str = "OPEN";
pub const ASSOC_RELEASED: &str = "RELEASED";
pub const ASSOC_ABORTED: &str = "ABORTED";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Versioned schema; `{ID}` is the auto-increment key of the backend.
const MIGRATIONS: &[&str] = &[
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
    r#"
CREATE INDEX series_unrouted ON series (first_received_ms)
    WHERE state = 'COMPLETE' AND (routed_revision IS NULL OR routed_revision < revision);
CREATE INDEX jobs_live ON jobs (created_ms) WHERE state IN ('QUEUED', 'FAILED', 'RUNNING');
CREATE INDEX outbox_unpurged ON outbox (path) WHERE purged_ms IS NULL;
CREATE INDEX outbox_live ON outbox (destination, created_ms) WHERE state IN ('PENDING', 'SENDING');
"#,
];

/// Key of the PostgreSQL advisory lock that serialises migrations of processes starting together.
const MIGRATION_LOCK: i64 = 0x5e9_0de1;

/// Handle to the index database.
#[derive(Clone)]
pub struct Index {
    pool: AnyPool,
    backend: Backend,
    url: String,
    wakeups: Arc<Wakeups>,
    listener: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Set while the database is known to be unreachable (a probe clears it), so that the receive
    /// path answers at once instead of waiting for a connection per instance.
    unavailable: Arc<std::sync::atomic::AtomicBool>,
}

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

/// Everything recorded about a stored instance.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub header: InstanceHeader,
    pub transfer_syntax: String,
    pub association_id: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
    pub path: String,
    pub size_bytes: i64,
    pub content_hash: String,
}

/// What recording an instance did to its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    pub revision: i64,
    pub new_series: bool,
    /// The series was COMPLETE and this instance opened a new revision.
    pub reopened: bool,
}

/// A series row for the tracker and the CLI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesRow {
    pub series_uid: String,
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i64>,
    pub calling_ae: Option<String>,
    pub revision: i64,
    pub state: String,
    pub completion_reason: Option<String>,
    pub expected_instances: Option<i64>,
    pub instance_count: i64,
    pub first_received_ms: i64,
    pub last_received_ms: i64,
    pub completed_ms: Option<i64>,
}

/// Slice geometry of one instance, for the stack check.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRow {
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
pub struct InstanceRow {
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

/// Where an indexed instance's file is (start-up reconciliation).
#[derive(Debug, Clone)]
pub struct IndexedFile {
    pub path: String,
    pub sop_uid: String,
    pub series_uid: String,
    /// The series revision the instance belongs to.
    pub revision: i64,
}

/// One history entry of a series.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesEvent {
    pub revision: i64,
    pub at_ms: i64,
    pub event: String,
    pub detail: Option<String>,
}

fn join_floats(v: &[f64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("\\")
}

fn parse_floats<const N: usize>(s: Option<String>) -> Option<[f64; N]> {
    let v: Vec<f64> = s?
        .split('\\')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    v.try_into().ok()
}

impl Index {
    /// Connect with the default pool settings (see [`open_with`](Self::open_with)).
    pub async fn open(url: &str) -> Result<Index, IndexError> {
        Index::open_with(url, 8, Duration::from_secs(5)).await
    }

    /// Connect with the pool settings of `database` (`segnode serve` / `worker`).
    pub async fn open_settings(
        database: &crate::config::DatabaseSettings,
    ) -> Result<Index, IndexError> {
        Index::open_with(
            &database.url,
            database.max_connections,
            crate::config::secs(database.acquire_timeout_s),
        )
        .await
    }

    /// Connect (creating the SQLite file and its folder when needed) and apply pending migrations.
    /// `max_connections` applies to PostgreSQL (SQLite has one); `acquire_timeout` bounds how long an
    /// operation waits for a connection (a database that is down fails fast instead of hanging).
    pub async fn open_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Index, IndexError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut connect_url = url.to_string();
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            if path.is_empty() || path == ":memory:" {
                return Err(IndexError::Url(url.into(), "a file path is needed".into()));
            }
            if let Some(dir) = std::path::Path::new(&path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| IndexError::Url(url.into(), e.to_string()))?;
                }
            }
            if !url.contains('?') {
                connect_url.push_str("?mode=rwc");
            }
        }
        let pool = AnyPoolOptions::new()
            // SQLite: one writer at a time anyway; a single connection avoids lock upgrades failing
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                max_connections
            })
            .acquire_timeout(acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await?;
        let index = Index {
            pool,
            backend,
            url: url.to_string(),
            wakeups: Arc::new(Wakeups::default()),
            listener: Arc::new(Mutex::new(None)),
            unavailable: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        index.migrate().await?;
        Ok(index)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The wake-up topics of this process (rung by this process's changes and, on PostgreSQL, by every
    /// process's once [`listen`](Self::listen) runs).
    pub fn wakeups(&self) -> &Arc<Wakeups> {
        &self.wakeups
    }

    /// Start listening for other processes' wake-ups (PostgreSQL; a no-op on SQLite). Idempotent.
    pub fn listen(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        if let Ok(mut l) = self.listener.lock() {
            if l.is_none() {
                *l = Some(super::wakeup::spawn_pg_listener(
                    self.url.clone(),
                    self.wakeups.clone(),
                ));
            }
        }
    }

    /// Queue a wake-up of `topic` for the other processes, sent when `tx` commits (PostgreSQL).
    /// The caller rings the local topic after the commit.
    pub async fn notify_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        topic: Topic,
    ) -> Result<(), IndexError> {
        if self.backend == Backend::Postgres {
            sqlx::query(topic.notify_sql()).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Wake `topic` in every process now (outside a transaction).
    pub async fn announce(&self, topic: Topic) -> Result<(), IndexError> {
        if self.backend == Backend::Postgres {
            sqlx::query(topic.notify_sql()).execute(&self.pool).await?;
        }
        self.wakeups.ring(topic);
        Ok(())
    }

    /// The connection pool, for the other rooms that keep their tables in the index database (jobs,
    /// outbox).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Facts of a series for routing: series attributes plus the first instance's geometry; `slices`
    /// counts the frames of multi-frame instances (an Enhanced CT of 300 frames is 300 slices).
    pub async fn series_facts(
        &self,
        series_uid: &str,
    ) -> Result<Option<crate::routing::SeriesFacts>, IndexError> {
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
        Ok(Some(crate::routing::SeriesFacts {
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

    async fn migrate(&self) -> Result<(), IndexError> {
        // one transaction: processes starting together against one PostgreSQL wait for each other
        // (advisory lock), and a failed migration leaves the schema as it was
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            let lock =
                format!("DO $$ BEGIN PERFORM pg_advisory_xact_lock({MIGRATION_LOCK}); END $$");
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
        let id = match self.backend {
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
        .bind(ASSOC_OPEN)
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
        state: &str,
        instances: i64,
        bytes: i64,
        outcome: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE associations SET state = $1, ended_ms = $2, instances = $3, bytes = $4, outcome = $5
             WHERE id = $6",
        )
        .bind(state)
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
        .bind(ASSOC_ABORTED)
        .bind(now_ms())
        .bind(ASSOC_OPEN)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

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
    pub async fn record_instance(&self, rec: &InstanceRecord) -> Result<RecordOutcome, IndexError> {
        let h = &rec.header;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // create the series row if it is new; on a shared database two receivers may race for it, and
        // ON CONFLICT lets exactly one of them create it
        let created = sqlx::query(
            "INSERT INTO series (series_uid, study_uid, patient_id, patient_name, study_date, modality,
                body_part, series_description, protocol_name, series_number, frame_of_reference_uid,
                calling_ae, called_ae, revision, state, instance_count, first_received_ms,
                last_received_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14, 0, $15, $15)
             ON CONFLICT (series_uid) DO NOTHING",
        )
        .bind(&h.series_uid)
        .bind(&h.study_uid)
        .bind(&h.patient_id)
        .bind(&h.patient_name)
        .bind(&h.study_date)
        .bind(&h.modality)
        .bind(&h.body_part)
        .bind(&h.series_description)
        .bind(&h.protocol_name)
        .bind(h.series_number)
        .bind(&h.frame_of_reference_uid)
        .bind(&rec.calling_ae)
        .bind(&rec.called_ae)
        .bind(RECEIVING)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // lock the row for the rest of the transaction (PostgreSQL; SQLite has one writer anyway), so
        // that a completion or reopening by another process cannot interleave with this instance
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT state, revision FROM series WHERE series_uid = $1{lock}"
        )))
        .bind(&h.series_uid)
        .fetch_optional(&mut *tx)
        .await?;
        let mut outcome = RecordOutcome {
            revision: 1,
            new_series: false,
            reopened: false,
        };
        match existing.filter(|_| !created) {
            None => {
                outcome.new_series = true;
                insert_event(
                    &mut tx,
                    &h.series_uid,
                    1,
                    now,
                    "received",
                    &format!("first instance from {} ({})", rec.calling_ae, rec.peer),
                )
                .await?;
            }
            Some(row) => {
                let state: String = row.try_get("state")?;
                let revision: i64 = row.try_get("revision")?;
                outcome.revision = revision;
                if state == COMPLETE {
                    outcome.revision = revision + 1;
                    outcome.reopened = true;
                    sqlx::query(
                        "UPDATE series SET revision = $1, state = $2, completion_reason = NULL,
                            completed_ms = NULL WHERE series_uid = $3",
                    )
                    .bind(outcome.revision)
                    .bind(RECEIVING)
                    .bind(&h.series_uid)
                    .execute(&mut *tx)
                    .await?;
                    insert_event(
                        &mut tx,
                        &h.series_uid,
                        outcome.revision,
                        now,
                        "revision",
                        &format!(
                            "revision {} opened by instance {} arriving after completion",
                            outcome.revision, h.sop_instance_uid
                        ),
                    )
                    .await?;
                }
            }
        }
        sqlx::query(
            "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid, transfer_syntax, revision,
                instance_number, acquisition_number, images_in_acquisition, number_of_frames, rows_, columns_,
                ipp, iop, pixel_spacing, slice_thickness, association_id, calling_ae, called_ae, peer,
                received_ms, path, size_bytes, content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                $21, $22, $23, $24)
             ON CONFLICT (sop_uid) DO UPDATE SET series_uid = $2, study_uid = $3, sop_class_uid = $4,
                transfer_syntax = $5, revision = $6, instance_number = $7, acquisition_number = $8,
                images_in_acquisition = $9, number_of_frames = $10, rows_ = $11, columns_ = $12, ipp = $13,
                iop = $14, pixel_spacing = $15, slice_thickness = $16, association_id = $17, calling_ae = $18,
                called_ae = $19, peer = $20, received_ms = $21, path = $22, size_bytes = $23,
                content_hash = $24",
        )
        .bind(&h.sop_instance_uid)
        .bind(&h.series_uid)
        .bind(&h.study_uid)
        .bind(&h.sop_class_uid)
        .bind(&rec.transfer_syntax)
        .bind(outcome.revision)
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
        .bind(&rec.association_id)
        .bind(&rec.calling_ae)
        .bind(&rec.called_ae)
        .bind(&rec.peer)
        .bind(now)
        .bind(&rec.path)
        .bind(rec.size_bytes)
        .bind(&rec.content_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE series SET last_received_ms = $1,
                instance_count = (SELECT COUNT(*) FROM instances WHERE series_uid = $2),
                expected_instances = COALESCE($3, expected_instances),
                modality = COALESCE(modality, $4), body_part = COALESCE(body_part, $5),
                series_description = COALESCE(series_description, $6)
             WHERE series_uid = $2",
        )
        .bind(now)
        .bind(&h.series_uid)
        .bind(h.images_in_acquisition.filter(|n| *n > 0))
        .bind(&h.modality)
        .bind(&h.body_part)
        .bind(&h.series_description)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Take an instance row back out (its file could not be published).
    pub async fn forget_instance(&self, sop_uid: &str, series_uid: &str) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM instances WHERE sop_uid = $1")
            .bind(sop_uid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE series SET instance_count = (SELECT COUNT(*) FROM instances WHERE series_uid = $1) WHERE series_uid = $1")
            .bind(series_uid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

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

    /// Series still receiving (candidates for completion).
    pub async fn receiving_series(&self) -> Result<Vec<SeriesRow>, IndexError> {
        self.series_where("WHERE state = 'RECEIVING'").await
    }

    /// Every series, newest first.
    pub async fn list_series(&self) -> Result<Vec<SeriesRow>, IndexError> {
        self.series_where("").await
    }

    async fn series_where(&self, filter: &str) -> Result<Vec<SeriesRow>, IndexError> {
        let sql = format!(
            "SELECT series_uid, study_uid, patient_id, modality, body_part, series_description,
                series_number, calling_ae, revision, state, completion_reason, expected_instances,
                instance_count, first_received_ms, last_received_ms, completed_ms
             FROM series {filter} ORDER BY first_received_ms DESC"
        );
        // `filter` is one of two constant strings of this module
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(series_row).collect()
    }

    /// Geometry of every instance of a series.
    pub async fn series_slices(&self, series_uid: &str) -> Result<Vec<SliceRow>, IndexError> {
        let rows = sqlx::query(
            "SELECT sop_uid, ipp, iop, pixel_spacing, rows_, columns_, number_of_frames
             FROM instances WHERE series_uid = $1",
        )
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SliceRow {
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

    /// States of the associations that delivered instances of this series revision.
    pub async fn series_association_states(
        &self,
        series_uid: &str,
        revision: i64,
    ) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(
            "SELECT DISTINCT a.state AS state FROM instances i JOIN associations a ON a.id = i.association_id
             WHERE i.series_uid = $1 AND i.revision = $2",
        )
        .bind(series_uid)
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("state").map_err(IndexError::from))
            .collect()
    }

    /// Mark a series revision COMPLETE unless something changed it meanwhile (a new instance, another
    /// tracker). Returns whether this call completed it.
    /// `seen` is the series row the evidence was judged on: its last-received time and instance count
    /// must be unchanged.
    pub async fn complete_series(
        &self,
        seen: &SeriesRow,
        reason: &str,
    ) -> Result<bool, IndexError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE series SET state = $1, completion_reason = $2, completed_ms = $3
             WHERE series_uid = $4 AND revision = $5 AND state = $6 AND last_received_ms = $7
                AND instance_count = $8",
        )
        .bind(COMPLETE)
        .bind(reason)
        .bind(now)
        .bind(&seen.series_uid)
        .bind(seen.revision)
        .bind(RECEIVING)
        .bind(seen.last_received_ms)
        .bind(seen.instance_count)
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

    /// Every indexed instance file: path (relative to the store), SOP Instance UID and series.
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
    pub async fn series_instances(&self, series_uid: &str) -> Result<Vec<InstanceRow>, IndexError> {
        let rows = sqlx::query(
            "SELECT sop_uid, revision, instance_number, transfer_syntax, calling_ae, received_ms, path,
                size_bytes FROM instances WHERE series_uid = $1 ORDER BY received_ms, sop_uid",
        )
        .bind(series_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
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

    /// Whether the database answers within `limit`.
    pub async fn ping(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// Whether the database is known to be unreachable right now (see [`note_error`](Self::note_error)).
    pub fn unavailable(&self) -> bool {
        self.unavailable.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Look at an error of the receive path: when the database is unreachable, mark it so and probe it
    /// (every 500 ms) until it answers again.
    pub fn note_error(&self, e: &IndexError) {
        use std::sync::atomic::Ordering;
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
    pub async fn state_counts(
        &self,
    ) -> Result<
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<String, i64>>,
        IndexError,
    > {
        let mut out = std::collections::BTreeMap::new();
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
            let mut m = std::collections::BTreeMap::new();
            for r in rows {
                m.insert(r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?);
            }
            out.insert(name, m);
        }
        Ok(out)
    }

    pub async fn close(&self) {
        if let Some(l) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            l.abort();
        }
        self.pool.close().await;
    }
}

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

fn series_row(r: &AnyRow) -> Result<SeriesRow, IndexError> {
    Ok(SeriesRow {
        series_uid: r.try_get("series_uid")?,
        study_uid: r.try_get("study_uid")?,
        patient_id: r.try_get("patient_id")?,
        modality: r.try_get("modality")?,
        body_part: r.try_get("body_part")?,
        series_description: r.try_get("series_description")?,
        series_number: r.try_get("series_number")?,
        calling_ae: r.try_get("calling_ae")?,
        revision: r.try_get("revision")?,
        state: r.try_get("state")?,
        completion_reason: r.try_get("completion_reason")?,
        expected_instances: r.try_get("expected_instances")?,
        instance_count: r.try_get("instance_count")?,
        first_received_ms: r.try_get("first_received_ms")?,
        last_received_ms: r.try_get("last_received_ms")?,
        completed_ms: r.try_get("completed_ms")?,
    })
}

// Tested against both backends in tests/db.rs.
