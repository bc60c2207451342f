//! The handle to the index database: the connection pool, which backend is behind it, and the
//! process's wake-up topics. Opening it applies pending migrations.
//!
//! One code path serves SQLite (embedded, the default) and PostgreSQL (scale-out) through sqlx's `Any`
//! driver: the SQL is kept portable (`$n` parameters, `ON CONFLICT`, BIGINT / DOUBLE PRECISION / TEXT
//! only). Times are milliseconds since the Unix epoch.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` behind a single connection: a killed process
//! loses no committed row (the WAL is in the OS cache), and the instance files, which are fsync'd before
//! any success status, are the ground truth the application re-indexes at start.
//!
//! The pool never leaves this crate: the table-family modules add their operations to [`Index`] (or
//! wrap it: [`crate::jobs::Queue`], [`crate::outbox::Outbox`]) and hand out typed records.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::error::IndexError;
use crate::notify::{self, Topic, Wakeups};
use crate::options::{Backend, DbOptions};
use crate::schema;

/// How long [`Index::close`] waits for connections in use.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Handle to the index database (cheap to clone: every clone shares the pool).
#[derive(Clone)]
pub struct Index {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    url: String,
    pub(crate) wakeups: Arc<Wakeups>,
    listener: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Set while the database is known to be unreachable (a probe clears it), so that the receive
    /// path answers at once instead of waiting for a connection per instance.
    pub(crate) unavailable: Arc<AtomicBool>,
}

impl Index {
    /// Connect with the default pool settings (see [`DbOptions::new`]).
    pub async fn open(url: &str) -> Result<Index, IndexError> {
        Index::open_with(&DbOptions::new(url)).await
    }

    /// Connect (creating the SQLite file and its folder when needed) and apply pending migrations.
    /// `max_connections` applies to PostgreSQL (SQLite has one); `acquire_timeout` bounds how long an
    /// operation waits for a connection (a database that is down fails fast instead of hanging).
    pub async fn open_with(options: &DbOptions) -> Result<Index, IndexError> {
        sqlx::any::install_default_drivers();
        let url = options.url.as_str();
        let backend = Backend::of_url(url);
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
                options.max_connections
            })
            .acquire_timeout(options.acquire_timeout)
            // SQLite: the connection is a local file that cannot drop, so no ping before each use (a
            // round trip to its worker thread, two per filed instance); PostgreSQL keeps the check
            // that finds a connection the server closed before a query fails on it
            .test_before_acquire(backend != Backend::Sqlite)
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
        schema::migrate(&pool, backend).await?;
        Ok(Index {
            pool,
            backend,
            url: url.to_string(),
            wakeups: Arc::new(Wakeups::default()),
            listener: Arc::new(Mutex::new(None)),
            unavailable: Arc::new(AtomicBool::new(false)),
        })
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
                *l = Some(notify::spawn_pg_listener(
                    self.url.clone(),
                    self.wakeups.clone(),
                ));
            }
        }
    }

    /// Queue a wake-up of `topic` for the other processes, sent when `tx` commits (PostgreSQL).
    /// The caller rings the local topic after the commit.
    pub(crate) async fn notify_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        topic: Topic,
    ) -> Result<(), IndexError> {
        notify::notify_in(tx, self.backend, topic).await?;
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

    /// The schema versions recorded as applied, in order (one entry per application: a database
    /// migrated by several processes at once still lists each version once).
    pub async fn schema_versions(&self) -> Result<Vec<i64>, IndexError> {
        schema::applied_versions(&self.pool).await
    }

    /// Close the pool: wait up to [`CLOSE_WAIT`] for connections in use to come back, then stop
    /// waiting (SQLite and PostgreSQL transactions are atomic: an exiting process loses nothing by not
    /// waiting longer). Unbounded, a CLI command that had printed its answer was once seen to hang
    /// here for more than 30 s while `serve` wrote to the same SQLite file.
    pub async fn close(&self) {
        if let Some(l) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            l.abort();
        }
        if tokio::time::timeout(CLOSE_WAIT, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!(
                waited_s = CLOSE_WAIT.as_secs(),
                "index connections still busy at close; not waiting longer"
            );
        }
    }
}
