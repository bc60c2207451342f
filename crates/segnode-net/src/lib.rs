//! segnode-net: the DICOM network layer of segnode, usable and testable without the rest of the node.
//!
//! It owns everything between a byte stream and "file this instance": the upper-layer PDUs on the wire
//! ([`wire`]), A-ASSOCIATE negotiation for both roles ([`negotiation`]), the DIMSE message codec
//! ([`dimse`]), what the node accepts ([`sop`]), the SCP side of an association — Verification and Storage,
//! release, abort and the ARTIM / idle / DIMSE timers ([`association`]) — the TCP accept loop with its
//! association limit and the bounded set of connections still in their handshake ([`listener`],
//! [`pending`]), DICOM TLS for both roles ([`tls`]) and the SCU ([`scu`]).
//!
//! The application plugs in through one trait, [`handler::ScpHandler`]: may this caller in, journal this
//! association, open a sink for an announced instance (fed fragment by fragment, so memory stays bounded
//! by one PDU) and counters as [`handler::Event`]s. This crate never names a database, a store or the
//! application's configuration; its own knobs are in [`options::ScpOptions`].
//!
//! Every association is served over any `AsyncRead + AsyncWrite + Unpin + Send` stream (dicom-ul 0.10.1's
//! own server only takes a `TcpStream`), which is what lets the tests run whole associations in-process
//! over `tokio::io::duplex`.
//!
//! Module graph (one way only, checked with `grep -n 'crate::' src/*.rs`):
//! `listener` → `association`, `handler`, `options`, `pending`, `tls`, `wire`; `tls` → `handler`; `association` → `dimse`, `handler`,
//! `negotiation`, `options`, `sop`, `wire`; `scu` → `dimse`, `negotiation`, `sop`, `wire`;
//! `scu` → `tls`; `handler` → `dimse`; `dimse` → `sop`; `options` → `slots`, `sop`; `association` → `slots` too; `wire`, `negotiation`, `pending`
//! and `sop` import no other module.

pub mod association;
pub mod dimse;
pub mod handler;
pub mod listener;
pub mod negotiation;
pub mod options;
pub mod pending;
pub mod scu;
pub mod slots;
pub mod sop;
pub mod storage_classes;
pub mod tls;
pub mod wire;

pub use association::{serve, Served};
pub use handler::{
    AssociationInfo, AssociationRequest, Event, HandshakeEnd, InstanceSink, RejectKind, ScpHandler,
    TlsPeer,
};
pub use options::ScpOptions;
