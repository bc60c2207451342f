//! The SCP's own settings (the application maps its configuration onto them): who we are, how large a
//! PDU we take, the timers, the association limit, and what we accept.

use std::sync::Arc;
use std::time::Duration;

use crate::slots::CallerSlots;
use crate::sop;

/// Settings of the C-STORE / C-ECHO SCP.
#[derive(Debug, Clone)]
pub struct ScpOptions {
    /// Our AE title (handed to [`crate::ScpHandler::admit`], which checks the called AE title).
    pub ae_title: String,
    /// The largest PDU we accept (announced in A-ASSOCIATE-AC; larger PDUs abort the association).
    pub max_pdu: u32,
    /// How long establishing an association may take once its A-ASSOCIATE-RQ has arrived (answer it),
    /// and, for [`crate::serve`] called directly, how long the A-ASSOCIATE-RQ may take to arrive.
    pub artim_timeout: Duration,
    /// How long a new connection of the listener may take to finish its TLS handshake (when TLS) and
    /// send its A-ASSOCIATE-RQ (the ARTIM timeout when that is shorter). Short: until then the
    /// connection has proved nothing.
    pub handshake_timeout: Duration,
    /// Connections of the listener still in their handshake (no A-ASSOCIATE-RQ yet), all peers
    /// together. They do not count against `max_associations`; when this bound is reached a new
    /// connection evicts the oldest pending one of the peer address holding the most.
    pub max_pending: usize,
    /// Pending connections of one peer IP address; one more evicts that address's oldest.
    pub max_pending_per_peer: usize,
    /// How long an association may stay silent between messages.
    pub idle_timeout: Duration,
    /// How long the next PDU of a message in progress may take, and the limit on every write.
    pub dimse_timeout: Duration,
    /// Associations served at once (counted from a valid A-ASSOCIATE-RQ on); more are answered
    /// A-ASSOCIATE-RJ (transient, local limit exceeded).
    pub max_associations: usize,
    /// Per-caller limits on concurrent associations (shared by every connection: the counters live
    /// here); a caller at its limit is answered A-ASSOCIATE-RJ (transient, local limit exceeded).
    pub caller_slots: Arc<CallerSlots>,
    /// How long shutdown waits for associations in flight before cutting them.
    pub shutdown_grace: Duration,
    /// Abstract syntaxes accepted: Verification and the storage SOP classes of [`sop`] by default.
    pub abstract_syntaxes: Vec<String>,
    /// Transfer syntaxes accepted for `decodable_only` (each must also be decodable):
    /// [`sop::TRANSFER_SYNTAXES`] by default.
    pub transfer_syntaxes: Vec<String>,
    /// Classes taken only in `transfer_syntaxes` (the images a pipeline reads,
    /// [`sop::PIPELINE_IMAGE_CLASSES`]); the others are taken in any syntax whose data set is readable.
    pub decodable_only: Vec<String>,
}

impl ScpOptions {
    /// Defaults for `ae_title`: 16 KiB PDUs, ARTIM 30 s, handshake 10 s, idle 300 s, DIMSE 60 s,
    /// 16 associations, 64 pending handshakes (16 per peer address).
    pub fn new(ae_title: impl Into<String>) -> ScpOptions {
        ScpOptions {
            ae_title: ae_title.into(),
            max_pdu: 16_384,
            artim_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_pending: 64,
            max_pending_per_peer: 16,
            idle_timeout: Duration::from_secs(300),
            dimse_timeout: Duration::from_secs(60),
            max_associations: 16,
            caller_slots: Arc::default(),
            shutdown_grace: Duration::from_secs(30),
            abstract_syntaxes: std::iter::once(sop::VERIFICATION)
                .chain(sop::STORAGE_SOP_CLASSES.iter().map(|(uid, _)| *uid))
                .map(String::from)
                .collect(),
            transfer_syntaxes: sop::TRANSFER_SYNTAXES
                .iter()
                .map(|(uid, _)| uid.to_string())
                .collect(),
            decodable_only: sop::PIPELINE_IMAGE_CLASSES
                .iter()
                .map(|(uid, _)| uid.to_string())
                .collect(),
        }
    }
}
