//! The SCU side: C-ECHO and C-STORE to a remote AE (result delivery, `segnode echo`, `segnode send`).
//!
//! Files are proposed in their own transfer syntax plus Explicit and Implicit VR Little Endian. A file
//! whose own syntax is accepted is sent byte for byte (no re-encoding, compressed data stays as is); a
//! native file may be re-encoded to the little endian syntax the peer accepted. Data sets are sent in
//! P-DATA fragments that respect the peer's maximum PDU; every wait has a timeout.

use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextNegotiated};
use dicom_ul::Pdu;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::dimse;
use crate::negotiation;
use crate::sop::VERIFICATION;
use crate::wire::{PduStream, WireError};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// A remote application entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Our calling AE title towards it.
    pub calling_ae: String,
}

impl Peer {
    /// Parse `AET@host:port`.
    pub fn parse(text: &str, calling_ae: &str) -> Result<Peer, ScuError> {
        let bad = || ScuError::Address(format!("`{text}`: expected AET@host:port"));
        let (ae, rest) = text.split_once('@').ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if ae.is_empty() || ae.len() > 16 || host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Peer {
            ae_title: ae.into(),
            host: host.into(),
            port,
            calling_ae: calling_ae.into(),
        })
    }
}

/// Timeouts and limits of outgoing associations.
#[derive(Debug, Clone)]
pub struct ScuOptions {
    pub connect_timeout: Duration,
    pub dimse_timeout: Duration,
    pub max_pdu: u32,
    /// DICOM TLS towards the peer (None: plain TCP).
    pub tls: Option<ClientTls>,
}

/// TLS towards a peer: the configuration (CA, our certificate) and the name its certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name checked against the server's certificate (None: the peer's host).
    pub server_name: Option<String>,
}

/// A byte stream an association runs over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Default for ScuOptions {
    fn default() -> Self {
        ScuOptions {
            connect_timeout: Duration::from_secs(10),
            dimse_timeout: Duration::from_secs(60),
            max_pdu: 262_144,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ScuError {
    #[error("{0}")]
    Address(String),
    #[error("cannot associate with {0}")]
    Associate(String),
    #[error("{peer} accepted no presentation context for {sop_class}")]
    NoContext { peer: String, sop_class: String },
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
}

/// One file to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub path: PathBuf,
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
}

impl Outgoing {
    /// Read the identifying UIDs from a Part 10 file's meta.
    pub fn from_file(path: &Path) -> Result<Outgoing, ScuError> {
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::SOP_CLASS_UID)
            .open_file(path)
            .map_err(|e| ScuError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let m = obj.meta();
        let t = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        Ok(Outgoing {
            path: path.to_path_buf(),
            sop_class: t(m.media_storage_sop_class_uid()),
            sop_instance: t(m.media_storage_sop_instance_uid()),
            transfer_syntax: t(m.transfer_syntax()),
        })
    }
}

/// An established association as requestor, over any byte stream.
pub struct Client<S> {
    wire: PduStream<S>,
    contexts: Vec<PresentationContextNegotiated>,
    dimse_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Client<S> {
    /// Request an association over `stream` (already connected) proposing `contexts`.
    pub async fn associate(
        stream: S,
        peer: &Peer,
        opts: &ScuOptions,
        contexts: &[(String, Vec<String>)],
    ) -> Result<Client<S>, ScuError> {
        let who = format!("{}@{}:{}", peer.ae_title, peer.host, peer.port);
        let mut wire = PduStream::new(stream, opts.max_pdu);
        wire.set_write_timeout(Some(opts.dimse_timeout));
        let rq = negotiation::request(&peer.calling_ae, &peer.ae_title, opts.max_pdu, contexts);
        wire.write(&Pdu::AssociationRQ(rq.clone()))
            .await
            .map_err(|e| ScuError::Associate(format!("{who}: {e}")))?;
        let answer = wire
            .read_within(opts.dimse_timeout)
            .await
            .map_err(|e| match e {
                WireError::Timeout(t) => ScuError::Timeout(t),
                e => ScuError::Associate(format!("{who}: {e}")),
            })?;
        match negotiation::agreed(&rq, answer) {
            Ok(agreed) => {
                wire.set_peer_max(agreed.peer_max_pdu);
                Ok(Client {
                    wire,
                    contexts: agreed.contexts,
                    dimse_timeout: opts.dimse_timeout,
                })
            }
            Err(e) => {
                if !matches!(e, negotiation::NegotiationError::Rejected(_)) {
                    let _ = wire
                        .write(&Pdu::AbortRQ {
                            source: dicom_ul::pdu::AbortRQSource::ServiceUser,
                        })
                        .await;
                }
                wire.shutdown().await;
                Err(ScuError::Associate(format!("{who}: {e}")))
            }
        }
    }

    /// The accepted presentation contexts.
    pub fn contexts(&self) -> &[PresentationContextNegotiated] {
        &self.contexts
    }

    /// The acceptor's maximum PDU length.
    pub fn peer_max_pdu(&self) -> u32 {
        self.wire.peer_max()
    }

    /// Send one PDU.
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), ScuError> {
        self.wire
            .write(pdu)
            .await
            .map_err(|e| ScuError::Protocol(format!("send: {e}")))
    }

    async fn send_command(&mut self, pc: u8, bytes: Vec<u8>) -> Result<(), ScuError> {
        self.send(&dimse::command_pdu(pc, bytes)).await
    }

    /// Receive PDUs until a complete command set arrives; returns its bytes.
    pub async fn receive_command(&mut self) -> Result<Vec<u8>, ScuError> {
        let limit = self.dimse_timeout;
        let mut cmd = Vec::new();
        loop {
            let pdu = match self.wire.read_within(limit).await {
                Err(WireError::Timeout(t)) => return Err(ScuError::Timeout(t)),
                Err(e) => return Err(ScuError::Protocol(format!("receive: {e}"))),
                Ok(p) => p,
            };
            match pdu {
                Pdu::PData { data } => {
                    for pv in data {
                        if pv.value_type == PDataValueType::Command {
                            cmd.extend_from_slice(&pv.data);
                            if pv.is_last {
                                return Ok(cmd);
                            }
                        }
                    }
                }
                Pdu::AbortRQ { .. } => {
                    return Err(ScuError::Protocol("peer aborted the association".into()))
                }
                other => return Err(ScuError::Protocol(format!("unexpected PDU {other:?}"))),
            }
        }
    }

    /// A-RELEASE: request, wait for the reply (bounded), close.
    pub async fn release(mut self) -> Result<(), ScuError> {
        self.send(&Pdu::ReleaseRQ).await?;
        let answer = self.wire.read_within(self.dimse_timeout).await;
        self.wire.shutdown().await;
        match answer {
            Ok(Pdu::ReleaseRP) => Ok(()),
            Ok(other) => Err(ScuError::Protocol(format!(
                "answer to A-RELEASE-RQ: {}",
                crate::wire::pdu_name(&other)
            ))),
            Err(e) => Err(ScuError::Protocol(format!("release: {e}"))),
        }
    }

    /// A-ABORT (service user), then close.
    pub async fn abort(mut self) {
        let _ = self
            .send(&Pdu::AbortRQ {
                source: dicom_ul::pdu::AbortRQSource::ServiceUser,
            })
            .await;
        self.wire.shutdown().await;
    }

    fn accepted(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.contexts
            .iter()
            .find(|pc| pc.abstract_syntax == abstract_syntax)
            .map(|pc| (pc.id, pc.transfer_syntax.clone()))
    }

    /// The accepted context to send `item` on: its own syntax when accepted, else (native data only) a
    /// little endian one.
    fn context_for(&self, item: &Outgoing) -> Option<(u8, String)> {
        let ok: Vec<(u8, String)> = self
            .contexts
            .iter()
            .filter(|pc| pc.abstract_syntax == item.sop_class)
            .map(|pc| (pc.id, pc.transfer_syntax.clone()))
            .collect();
        ok.iter()
            .find(|(_, ts)| *ts == item.transfer_syntax)
            .cloned()
            .or_else(|| {
                if is_encapsulated(&item.transfer_syntax) {
                    None
                } else {
                    ok.into_iter()
                        .find(|(_, ts)| ts == EXPLICIT_LE || ts == IMPLICIT_LE)
                }
            })
    }

    /// C-ECHO on this association; returns the response status.
    pub async fn echo(&mut self, peer: &Peer) -> Result<u16, ScuError> {
        let pc = self
            .accepted(VERIFICATION)
            .map(|(id, _)| id)
            .ok_or_else(|| ScuError::NoContext {
                peer: peer.ae_title.clone(),
                sop_class: VERIFICATION.into(),
            })?;
        self.send_command(pc, dimse::encode_echo_rq(1)).await?;
        let rsp = self.receive_command().await?;
        dimse::response_status(&rsp).map_err(|e| ScuError::Protocol(e.to_string()))
    }

    /// C-STORE one data set (already in the context's transfer syntax) in fragments that respect the
    /// peer's maximum PDU; returns the response status.
    pub async fn store_dataset(
        &mut self,
        pc: u8,
        message_id: u16,
        sop_class: &str,
        sop_instance: &str,
        data: &[u8],
    ) -> Result<u16, ScuError> {
        let max = match self.wire.peer_max() {
            0 => 1 << 20,
            n => n as usize,
        };
        let chunk = max.saturating_sub(6).max(1024);
        self.send_command(
            pc,
            dimse::encode_store_rq(message_id, sop_class, sop_instance),
        )
        .await?;
        let mut pieces = data.chunks(chunk).peekable();
        if pieces.peek().is_none() {
            return Err(ScuError::Protocol("empty data set".into()));
        }
        while let Some(piece) = pieces.next() {
            self.send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: pieces.peek().is_none(),
                    data: piece.to_vec(),
                }],
            })
            .await?;
        }
        let rsp = self.receive_command().await?;
        dimse::response_status(&rsp).map_err(|e| ScuError::Protocol(e.to_string()))
    }
}

/// Connect over TCP and request an association (connect and negotiation bounded by twice the connect
/// timeout, as before).
async fn connect(
    peer: &Peer,
    opts: &ScuOptions,
    contexts: &[(String, Vec<String>)],
) -> Result<Client<Box<dyn Io>>, ScuError> {
    let addr = format!("{}:{}", peer.host, peer.port);
    let limit = opts.connect_timeout * 2;
    let attempt = async {
        let stream =
            match tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(&addr))
                .await
            {
                Err(_) => {
                    return Err(ScuError::Associate(format!(
                        "{}@{addr}: connection timed out",
                        peer.ae_title
                    )))
                }
                Ok(Err(e)) => {
                    return Err(ScuError::Associate(format!(
                        "{}@{addr}: could not connect: {e}",
                        peer.ae_title
                    )))
                }
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Io> = match &opts.tls {
            None => Box::new(stream),
            Some(t) => {
                let name = t.server_name.as_deref().unwrap_or(&peer.host);
                let name = crate::tls::server_name(name)
                    .map_err(|e| ScuError::Associate(format!("{}@{addr}: {e}", peer.ae_title)))?;
                let tls = tokio_rustls::TlsConnector::from(t.config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| {
                        ScuError::Associate(format!(
                            "{}@{addr}: TLS handshake failed: {e}",
                            peer.ae_title
                        ))
                    })?;
                Box::new(tls)
            }
        };
        Client::associate(stream, peer, opts, contexts).await
    };
    match tokio::time::timeout(limit, attempt).await {
        Err(_) => Err(ScuError::Timeout(limit)),
        Ok(r) => r,
    }
}

/// C-ECHO; returns the response status.
pub async fn echo(peer: &Peer, opts: &ScuOptions) -> Result<u16, ScuError> {
    let mut a = connect(peer, opts, &echo_contexts()).await?;
    let status = a.echo(peer).await?;
    let _ = a.release().await;
    Ok(status)
}

/// The presentation context a C-ECHO proposes.
pub fn echo_contexts() -> Vec<(String, Vec<String>)> {
    vec![(VERIFICATION.to_string(), vec![IMPLICIT_LE.to_string()])]
}

/// Whether pixel data in this transfer syntax is encapsulated (compressed).
fn is_encapsulated(ts: &str) -> bool {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .is_none_or(|t| t.is_encapsulated_pixel_data())
}

/// The data set of `item` encoded in `ts` (byte for byte when `ts` is the file's own syntax).
fn dataset_in(item: &Outgoing, ts: &str) -> Result<Vec<u8>, ScuError> {
    let err = |reason: String| ScuError::File {
        path: item.path.display().to_string(),
        reason,
    };
    if ts == item.transfer_syntax {
        let bytes = std::fs::read(&item.path).map_err(|e| err(e.to_string()))?;
        if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
            return Err(err("not a DICOM Part 10 file".into()));
        }
        let group_len =
            u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
        return bytes
            .get(144 + group_len..)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| err("truncated file meta".into()));
    }
    let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    let target = registry
        .get(ts)
        .ok_or_else(|| err(format!("unknown transfer syntax {ts}")))?;
    let obj = dicom_object::open_file(&item.path).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, target)
        .map_err(|e| err(format!("re-encoding to {ts}: {e}")))?;
    Ok(out)
}

/// C-STORE `items` over one association. The outer error is an association-level failure (nothing was
/// sent past that point); the inner results are per item: the response status or why it was not sent.
pub async fn store(
    peer: &Peer,
    opts: &ScuOptions,
    items: &[Outgoing],
) -> Result<Vec<Result<u16, ScuError>>, ScuError> {
    let mut a = connect(peer, opts, &store_contexts(items)).await?;
    let results = store_on(&mut a, peer, items).await?;
    let _ = a.release().await;
    Ok(results)
}

/// The presentation contexts proposed for `items`: each file's own transfer syntax in a context of its
/// own (so the peer cannot pick another one for a compressed file), plus, for native files, one context
/// offering the little endian syntaxes to fall back to. Compressed data is never re-encoded.
pub fn store_contexts(items: &[Outgoing]) -> Vec<(String, Vec<String>)> {
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |abs: &str, ts: Vec<String>| {
        if !contexts.iter().any(|(a, t)| a == abs && *t == ts) && contexts.len() < 128 {
            contexts.push((abs.to_string(), ts));
        }
    };
    for it in items {
        add(&it.sop_class, vec![it.transfer_syntax.clone()]);
        if !is_encapsulated(&it.transfer_syntax) {
            add(
                &it.sop_class,
                vec![EXPLICIT_LE.to_string(), IMPLICIT_LE.to_string()],
            );
        }
    }
    contexts
}

/// C-STORE `items` on an established association (see [`store`]); the association stays open.
pub async fn store_on<S: AsyncRead + AsyncWrite + Unpin + Send>(
    a: &mut Client<S>,
    peer: &Peer,
    items: &[Outgoing],
) -> Result<Vec<Result<u16, ScuError>>, ScuError> {
    let mut results = Vec::with_capacity(items.len());
    for (n, it) in items.iter().enumerate() {
        let Some((pc, ts)) = a.context_for(it) else {
            results.push(Err(ScuError::NoContext {
                peer: peer.ae_title.clone(),
                sop_class: format!("{} in {}", it.sop_class, it.transfer_syntax),
            }));
            continue;
        };
        let data = match dataset_in(it, &ts) {
            Ok(d) => d,
            Err(e) => {
                results.push(Err(e));
                continue;
            }
        };
        let msg_id = (n % 65_535 + 1) as u16;
        let status = a
            .store_dataset(pc, msg_id, &it.sop_class, &it.sop_instance, &data)
            .await?;
        results.push(Ok(status));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses() {
        assert_eq!(
            Peer::parse("ORTHANC@127.0.0.1:4242", "SEGNODE").unwrap(),
            Peer {
                ae_title: "ORTHANC".into(),
                host: "127.0.0.1".into(),
                port: 4242,
                calling_ae: "SEGNODE".into()
            }
        );
        assert!(Peer::parse("ORTHANC127.0.0.1:4242", "S").is_err());
        assert!(Peer::parse("ORTHANC@127.0.0.1", "S").is_err());
        assert!(Peer::parse("@h:1", "S").is_err());
        assert!(Peer::parse("A@h:0", "S").is_err());
    }
}
