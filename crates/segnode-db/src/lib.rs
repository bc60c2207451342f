//! segnode-db: the index database of segnode, and the only crate of the workspace that depends on
//! sqlx.
//!
//! One SQL layer serves SQLite (embedded, the default) and PostgreSQL (scale-out) through sqlx's `Any`
//! driver. Callers get typed records and typed states, never a row: the pool stays inside this crate.
//! The crate knows nothing of segnode's configuration (the application builds [`DbOptions`]) nor of
//! DICOM parsing (the application hands over plain [`instances::NewInstance`] values).
//!
//! Modules, from the leaves up (none imports a module that imports it):
//! - [`error`]: [`IndexError`], the one error type;
//! - [`options`]: [`DbOptions`] and the [`Backend`] a URL names;
//! - [`time`], [`ids`]: epoch milliseconds, retry backoff, random row ids;
//! - [`state`]: the typed states of every table, with their SQL literals;
//! - [`schema`]: migrations and the partial-index conditions, each defined once;
//! - [`notify`]: wake-up topics in the process, LISTEN / NOTIFY between processes;
//! - [`pool`]: [`Index`], the handle (pool, backend, wake-ups), opening and migrating;
//! - [`health`]: the availability probe, the ping and the per-state counts;
//! - [`events`]: the history of each series;
//! - [`associations`]: the association journal;
//! - [`instances`]: instance filing and per-instance reads;
//! - [`series`]: the series lifecycle (receiving → complete);
//! - [`outbox`]: deliveries of results;
//! - [`jobs`]: the job queue;
//! - [`routing`]: the facts routing matches on and the claim of a revision's routing.

pub mod associations;
pub mod error;
pub mod events;
pub mod health;
pub mod ids;
pub mod instances;
pub mod jobs;
pub mod nodes;
pub mod notify;
pub mod options;
pub mod outbox;
pub mod pool;
pub mod retention;
pub mod routing;
pub mod schema;
pub mod series;
pub mod state;
pub mod time;

pub use error::IndexError;
pub use ids::new_id;
pub use notify::{Topic, Waiter, Wakeups};
pub use options::{Backend, DbOptions};
pub use pool::Index;
pub use state::{AssociationState, DeliveryState, JobState, SeriesState};
pub use time::{backoff_ms, now_ms};
