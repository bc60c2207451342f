//! The one error type of the index database. Every module returns it, so callers match on one enum
//! whatever table they touched; [`IndexError::is_unavailable`] tells an unreachable database (the
//! receiver refuses instances, A700) from a statement that failed on a reachable one.

/// An index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database url `{0}`: {1}")]
    Url(String, String),
    #[error("{0}")]
    Gone(String),
    /// A state column held a value no state enum knows (a row written by a newer or foreign program).
    #[error("unknown {table} state `{value}` in the index")]
    UnknownState { table: &'static str, value: String },
}

impl IndexError {
    /// The error the receive path answers with while the database is known to be unreachable: the
    /// same as a pool that timed out waiting for a connection.
    pub fn pool_timed_out() -> IndexError {
        IndexError::Db(sqlx::Error::PoolTimedOut)
    }

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
