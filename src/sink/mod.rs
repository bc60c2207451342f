//! Sinks: where results leave the node. The dispatcher owns the outbox, the retries, the back-off and the
//! dead letters; a sink only sends a batch of result files to one destination and says, per object, what
//! the destination answered.
//!
//! The C-STORE SCU is the one sink today (`cstore.rs`). A DICOMweb STOW-RS or a folder sink is one more
//! file implementing [`Sink`] and one more arm in [`for_destination`].

pub mod cstore;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::config::{DestinationSettings, Settings};

/// One result object to send.
#[derive(Debug, Clone)]
pub struct SinkItem {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// What the destination answered for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted: DICOM status 0000, or a warning status.
    Accepted(u16),
    /// Refused with a failure status; `retryable` when the destination may take it later (Out of
    /// Resources), otherwise it never will.
    Refused { status: u16, retryable: bool },
    /// This object could not be sent (read error, the association ended under it).
    Failed(String),
}

/// The destination could not be reached at all: nothing of the batch was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The future a [`Sink`] returns (boxed, so that sinks can live behind `dyn Sink`).
pub type SendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Answer>, Unreachable>> + Send + 'a>>;

/// A destination type.
pub trait Sink: Send + Sync {
    /// Send `items` in one go: one [`Answer`] per item, in order, or [`Unreachable`].
    fn send<'a>(&'a self, items: &'a [SinkItem]) -> SendFuture<'a>;
}

/// The sink of a configured destination.
pub fn for_destination(dest: &DestinationSettings, settings: &Settings) -> Box<dyn Sink> {
    Box::new(cstore::CStoreSink::new(dest, settings))
}
