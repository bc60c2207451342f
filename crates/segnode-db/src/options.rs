//! How to reach the database: the options the application builds from its own configuration (this
//! crate knows nothing of segnode's config file), and which engine a URL names.

use std::time::Duration;

/// Which engine is behind the pool (the SQL differs in a few places: auto-increment keys, row locks,
/// NOTIFY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The engine a database URL names: `sqlite:…` is SQLite, anything else PostgreSQL.
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }
}

/// Pool options.
#[derive(Debug, Clone, PartialEq)]
pub struct DbOptions {
    /// `sqlite://path/index.db` (the file and its folder are created) or `postgres://…`.
    pub url: String,
    /// PostgreSQL connections per process (SQLite always uses one).
    pub max_connections: u32,
    /// How long an operation waits for a connection: a database that is down fails fast instead of
    /// hanging the caller.
    pub acquire_timeout: Duration,
}

impl DbOptions {
    /// `url` with the default pool settings (8 connections, 5 s acquire timeout).
    pub fn new(url: &str) -> DbOptions {
        DbOptions {
            url: url.to_string(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}
