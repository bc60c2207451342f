//! The seam between the DICOM layer and the application: the one trait the application implements
//! ([`ScpHandler`]), the per-instance sink it hands out ([`InstanceSink`]) and the counters the layer
//! reports ([`Event`]).
//!
//! The DICOM layer decides everything the protocol decides (negotiation, which command is legal when,
//! whether the SOP class matches its presentation context, timeouts); the application decides
//! everything about its data (who may call, where an instance goes, what status it earns). Neither
//! side sees the other's types beyond this module.

use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use std::future::Future;
use std::net::SocketAddr;

/// Why the application turns a caller away (sent as A-ASSOCIATE-RJ, permanent, service user).
pub type RejectReason = AssociationRJServiceUserReason;

/// A caller asking for an association, as the application sees it before admitting it.
#[derive(Debug, Clone)]
pub struct AssociationRequest<'a> {
    /// Our own AE title ([`crate::ScpOptions::ae_title`]).
    pub local_ae: &'a str,
    pub calling_ae: &'a str,
    pub called_ae: &'a str,
    pub peer: SocketAddr,
    /// User identity negotiation item, if the requestor sent one (never answered).
    pub user_identity: Option<&'a UserIdentity>,
    /// The TLS session the request came over (None: plain TCP).
    pub tls: Option<&'a TlsPeer>,
}

/// What a TLS connection established about its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// e.g. `TLSv1_3`.
    pub protocol: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// SHA-256 of the peer's certificate (hex), when it presented one (always, with mutual TLS).
    pub certificate_sha256: Option<String>,
}

/// An established association.
#[derive(Debug, Clone)]
pub struct AssociationInfo {
    /// Random id of this association (16 hex digits), also in the logs' span.
    pub id: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: SocketAddr,
    /// The TLS session it runs over (None: plain TCP).
    pub tls: Option<TlsPeer>,
}

/// How an association ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A-RELEASE completed.
    Released,
    /// The peer sent A-ABORT.
    PeerAborted,
    /// We aborted (protocol violation, timeout, shutdown, the journal failed…), and why.
    Aborted(String),
}

impl Ending {
    pub fn released(&self) -> bool {
        *self == Ending::Released
    }
}

impl std::fmt::Display for Ending {
    /// The journal's wording: `released`, `aborted by peer`, `aborted: <why>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Released => f.write_str("released"),
            Ending::PeerAborted => f.write_str("aborted by peer"),
            Ending::Aborted(why) => write!(f, "aborted: {why}"),
        }
    }
}

/// What an association carried, reported when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub stored: i64,
    pub failed: i64,
    pub echoes: i64,
    /// Data set bytes received.
    pub bytes: i64,
}

/// What a C-STORE command announced, on the presentation context it arrived on.
#[derive(Debug, Clone)]
pub struct Announced {
    pub sop_class: String,
    pub sop_instance: String,
    /// The transfer syntax of the presentation context.
    pub transfer_syntax: String,
}

/// The DIMSE status (and Error Comment) a C-STORE is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub status: u16,
    pub comment: Option<String>,
}

impl StoreStatus {
    pub fn success() -> StoreStatus {
        StoreStatus {
            status: crate::dimse::status::SUCCESS,
            comment: None,
        }
    }

    pub fn failure(status: u16, comment: impl Into<String>) -> StoreStatus {
        StoreStatus {
            status,
            comment: Some(comment.into()),
        }
    }
}

/// Why an association was turned away before it was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// A-ASSOCIATE-RJ from negotiation: the application refused the caller, or the request was not one
    /// we take (protocol version, application context).
    Refused,
    /// The association limit was reached.
    Limit,
    /// The application said it cannot take associations now ([`ScpHandler::ready`]).
    NotReady,
}

/// How a connection of the listener left the handshake phase without an A-ASSOCIATE-RQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeEnd {
    /// A newer connection took its place in the pending set (bound reached).
    Evicted,
    /// No TLS handshake / A-ASSOCIATE-RQ within the handshake timeout.
    TimedOut,
    /// The TLS handshake failed (no or a wrong certificate, plain TCP on the TLS port, …).
    TlsFailed,
}

/// Counters the DICOM layer reports as they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection of the listener ended before its A-ASSOCIATE-RQ.
    Handshake {
        peer: SocketAddr,
        end: HandshakeEnd,
    },
    Accepted,
    Rejected(RejectKind),
    Echo,
    /// Data set bytes of one P-DATA fragment.
    Received(u64),
    /// A C-STORE was answered: `stored` = not a failure status.
    Instance {
        stored: bool,
    },
}

/// Receives one instance's data set as it arrives. Dropping a sink without [`InstanceSink::finish`]
/// (association released or aborted mid-transfer) must discard what it received.
pub trait InstanceSink: Send + 'static {
    /// One data fragment, in order. Errors are kept by the sink and reported by `finish`: the data set
    /// is still drained from the association.
    fn write(&mut self, fragment: &[u8]);

    /// The data set is complete: file it and say how the C-STORE is answered. The response is sent only
    /// after this returns, so success must mean "durably filed".
    fn finish(self) -> impl Future<Output = StoreStatus> + Send;
}

/// The application side of the C-STORE / C-ECHO SCP.
pub trait ScpHandler: Send + Sync + 'static {
    type Sink: InstanceSink;

    /// Whether new associations can be served now, checked before a connection's A-ASSOCIATE-RQ is
    /// read; `Err(why)` answers A-ASSOCIATE-RJ (transient, temporary congestion).
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// May this caller in? `Err` answers A-ASSOCIATE-RJ (permanent, service user, that reason).
    fn admit(&self, request: &AssociationRequest<'_>) -> Result<(), RejectReason>;

    /// The association is established; `Err(why)` aborts it before any message is read.
    fn begin(
        &self,
        association: &AssociationInfo,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The association has ended (not called when `begin` failed).
    fn end(
        &self,
        association: &AssociationInfo,
        ending: &Ending,
        tally: &Tally,
    ) -> impl Future<Output = ()> + Send;

    /// A C-STORE announced an instance on a context that negotiated its SOP class: where should its data
    /// set go? `Err` refuses it with that status once the data set has been drained.
    fn open(
        &self,
        association: &AssociationInfo,
        announced: &Announced,
    ) -> Result<Self::Sink, StoreStatus>;

    /// A counter moved (metrics); called inline, so keep it cheap.
    fn event(&self, _event: Event) {}
}
