//! Upper-layer PDUs on a byte stream: framing, size limits and timeouts, for either role.
//!
//! dicom-ul 0.10.1 has the PDU codec (`read_pdu` / `write_pdu`) but ties its association types to
//! `TcpStream`; this module puts the codec on any `AsyncRead + AsyncWrite` stream so an association can
//! run over TCP or, in tests, over an in-memory pipe. A PDU is read whole (header, then exactly its
//! length) into one reused buffer: memory is bounded by the largest PDU we accept, and a length over that
//! limit is refused from the 6-byte header, before anything is allocated.
//!
//! [`PduStream::read_frame`] serves the receiving side of an association: a P-DATA-TF is not decoded
//! into owned values (dicom-ul's codec copies every fragment into a new `Vec`) but split into
//! [`Pdv`] headers whose payloads are read in place from the buffer the socket filled, so a data set
//! fragment is copied once, from the socket into that buffer, before it goes to its file.

use dicom_ul::pdu::{
    read_pdu, write_pdu, Pdu, MAXIMUM_PDU_SIZE, MINIMUM_PDU_SIZE, PDU_HEADER_SIZE,
};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a PDU could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("PDU of {length} bytes exceeds the maximum of {max}")]
    TooLarge { length: u32, max: u32 },
    #[error("malformed PDU: {0}")]
    Malformed(String),
    #[error("cannot encode PDU: {0}")]
    Encode(String),
    #[error("PDU of {length} bytes exceeds the peer's maximum of {max}")]
    PeerLimit { length: usize, max: u32 },
    #[error("no PDU within {0:?}")]
    Timeout(Duration),
    #[error("write not finished within {0:?}")]
    WriteTimeout(Duration),
}

/// PDU type of P-DATA-TF (PS3.8 9.3.5).
const P_DATA_TF: u8 = 0x04;

/// One presentation data value of a P-DATA-TF read by [`PduStream::read_frame`]: its header, and where
/// its payload lies in the stream's buffer ([`PduStream::payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdv {
    pub presentation_context_id: u8,
    /// A command fragment (else a data set fragment).
    pub command: bool,
    /// The last fragment of its command or data set.
    pub last: bool,
    range: std::ops::Range<usize>,
}

/// A PDU as [`PduStream::read_frame`] returns it.
#[derive(Debug)]
pub enum Frame {
    /// A P-DATA-TF: its values, in order, payloads still in the stream's buffer.
    PData(Vec<Pdv>),
    /// Any other PDU, decoded.
    Other(Pdu),
}

/// A byte stream carrying PDUs.
pub struct PduStream<S> {
    stream: S,
    /// The last PDU read (header included) is `buf[..len]`; the buffer only grows, so it is not
    /// cleared or zero-filled again for every PDU.
    buf: Vec<u8>,
    len: usize,
    out: Vec<u8>,
    /// Largest PDU body we accept (our maximum PDU length).
    max_in: u32,
    /// Largest PDU body the peer accepts (0: not known yet, no limit).
    max_out: u32,
    write_timeout: Option<Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PduStream<S> {
    /// `max_in`: the largest PDU we accept; clamped to what the codec allows.
    pub fn new(stream: S, max_in: u32) -> PduStream<S> {
        PduStream {
            stream,
            buf: Vec::new(),
            len: 0,
            out: Vec::new(),
            max_in: clamp_max_pdu(max_in),
            max_out: 0,
            write_timeout: None,
        }
    }

    /// The peer's maximum PDU length, once negotiated (0: unlimited).
    pub fn set_peer_max(&mut self, max: u32) {
        self.max_out = max;
    }

    pub fn peer_max(&self) -> u32 {
        self.max_out
    }

    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    /// Read one PDU, waiting at most `limit`.
    pub async fn read_within(&mut self, limit: Duration) -> Result<Pdu, WireError> {
        match tokio::time::timeout(limit, self.read()).await {
            Err(_) => Err(WireError::Timeout(limit)),
            Ok(r) => r,
        }
    }

    /// Read one PDU.
    pub async fn read(&mut self) -> Result<Pdu, WireError> {
        self.read_raw().await?;
        self.decode()
    }

    /// Read one PDU, waiting at most `limit`; a P-DATA-TF is only split into its values.
    pub async fn read_frame_within(&mut self, limit: Duration) -> Result<Frame, WireError> {
        match tokio::time::timeout(limit, self.read_frame()).await {
            Err(_) => Err(WireError::Timeout(limit)),
            Ok(r) => r,
        }
    }

    /// Read one PDU; a P-DATA-TF is only split into its values (payloads via [`PduStream::payload`],
    /// valid until the next read).
    pub async fn read_frame(&mut self) -> Result<Frame, WireError> {
        self.read_raw().await?;
        if self.buf[0] != P_DATA_TF {
            return self.decode().map(Frame::Other);
        }
        split_pdata(&self.buf[PDU_HEADER_SIZE as usize..self.len]).map(Frame::PData)
    }

    /// The payload of a value of the last P-DATA-TF [`PduStream::read_frame`] returned.
    pub fn payload(&self, pdv: &Pdv) -> &[u8] {
        let start = PDU_HEADER_SIZE as usize + pdv.range.start;
        let end = PDU_HEADER_SIZE as usize + pdv.range.end;
        self.buf.get(start..end.min(self.len)).unwrap_or_default()
    }

    /// Read the next PDU whole into `buf[..len]`.
    async fn read_raw(&mut self) -> Result<(), WireError> {
        let mut header = [0u8; PDU_HEADER_SIZE as usize];
        let mut got = 0;
        while got < header.len() {
            match self.stream.read(&mut header[got..]).await? {
                0 if got == 0 => return Err(WireError::Closed),
                0 => return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                n => got += n,
            }
        }
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        if length > self.max_in {
            return Err(WireError::TooLarge {
                length,
                max: self.max_in,
            });
        }
        let total = header.len() + length as usize;
        if self.buf.len() < total {
            self.buf.resize(total, 0);
        }
        self.len = 0;
        self.buf[..header.len()].copy_from_slice(&header);
        self.stream
            .read_exact(&mut self.buf[header.len()..total])
            .await?;
        self.len = total;
        Ok(())
    }

    /// Decode the PDU in `buf[..len]` with dicom-ul's codec.
    fn decode(&self) -> Result<Pdu, WireError> {
        match read_pdu(&self.buf[..self.len], self.max_in, true) {
            Ok(Some(pdu)) => Ok(pdu),
            Ok(None) => Err(WireError::Malformed("incomplete PDU".into())),
            Err(e) => Err(WireError::Malformed(e.to_string())),
        }
    }

    /// Write one PDU (within the write timeout, if one is set).
    pub async fn write(&mut self, pdu: &Pdu) -> Result<(), WireError> {
        self.out.clear();
        write_pdu(&mut self.out, pdu).map_err(|e| WireError::Encode(e.to_string()))?;
        let body = self.out.len().saturating_sub(PDU_HEADER_SIZE as usize);
        if self.max_out != 0 && body > self.max_out as usize {
            return Err(WireError::PeerLimit {
                length: body,
                max: self.max_out,
            });
        }
        let send = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match self.write_timeout {
            None => Ok(send.await?),
            Some(t) => match tokio::time::timeout(t, send).await {
                Err(_) => Err(WireError::WriteTimeout(t)),
                Ok(r) => Ok(r?),
            },
        }
    }

    /// Close our side of the stream (best effort).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// The presentation data values of a P-DATA-TF body (PS3.8 9.3.5: item length, presentation context ID,
/// message control header, payload), each checked to lie within the body.
fn split_pdata(body: &[u8]) -> Result<Vec<Pdv>, WireError> {
    let mut pdvs = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let item = body
            .get(at..at + 6)
            .ok_or_else(|| WireError::Malformed("truncated presentation data value".into()))?;
        let length = u32::from_be_bytes([item[0], item[1], item[2], item[3]]) as usize;
        let end = (at + 4)
            .checked_add(length)
            .filter(|end| *end <= body.len() && length >= 2)
            .ok_or_else(|| {
                WireError::Malformed(format!(
                    "presentation data value of {length} bytes does not fit its P-DATA-TF"
                ))
            })?;
        pdvs.push(Pdv {
            presentation_context_id: item[4],
            command: item[5] & 0x01 != 0,
            last: item[5] & 0x02 != 0,
            range: at + 6..end,
        });
        at = end;
    }
    Ok(pdvs)
}

/// A maximum PDU length the codec accepts (0 means "no limit": the largest one).
pub fn clamp_max_pdu(max: u32) -> u32 {
    if max == 0 {
        MAXIMUM_PDU_SIZE
    } else {
        max.clamp(MINIMUM_PDU_SIZE, MAXIMUM_PDU_SIZE)
    }
}

/// The name of a PDU for logs and abort reasons.
pub fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::Unknown { .. } => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn round_trip_and_limits() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = PduStream::new(a, 16_384);
        let mut b = PduStream::new(b, 16_384);
        a.write(&Pdu::ReleaseRQ).await.unwrap();
        assert_eq!(b.read().await.unwrap(), Pdu::ReleaseRQ);
        // a P-DATA claiming more than our maximum is refused from its header
        let (c, mut d) = tokio::io::duplex(1 << 16);
        let mut c = PduStream::new(c, 16_384);
        d.write_all(&[0x04, 0, 0xFF, 0xFF, 0xFF, 0xF0])
            .await
            .unwrap();
        assert!(matches!(c.read().await, Err(WireError::TooLarge { .. })));
        // end of stream before a PDU: closed; in the middle of one: an I/O error
        drop(d);
        assert!(matches!(c.read().await, Err(WireError::Closed)));
        let (e, mut f) = tokio::io::duplex(1 << 16);
        let mut e = PduStream::new(e, 16_384);
        f.write_all(&[0x04, 0, 0, 0, 0, 20, 1, 2]).await.unwrap();
        drop(f);
        assert!(matches!(e.read().await, Err(WireError::Io(_))));
        assert!(matches!(
            b.read_within(Duration::from_millis(20)).await,
            Err(WireError::Timeout(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn p_data_values_are_read_in_place() {
        use dicom_ul::pdu::{PDataValue, PDataValueType};
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = PduStream::new(a, 16_384);
        let mut b = PduStream::new(b, 16_384);
        let value = |pc, value_type, is_last, data: &[u8]| PDataValue {
            presentation_context_id: pc,
            value_type,
            is_last,
            data: data.to_vec(),
        };
        // a command and the first data fragment in one PDU, then a release
        a.write(&Pdu::PData {
            data: vec![
                value(1, PDataValueType::Command, true, b"cmd"),
                value(1, PDataValueType::Data, false, b"data set"),
            ],
        })
        .await
        .unwrap();
        a.write(&Pdu::ReleaseRQ).await.unwrap();
        let Frame::PData(values) = b.read_frame().await.unwrap() else {
            panic!("P-DATA expected");
        };
        assert_eq!(values.len(), 2);
        assert!(values[0].command && values[0].last && values[0].presentation_context_id == 1);
        assert_eq!(b.payload(&values[0]), b"cmd");
        assert!(!values[1].command && !values[1].last);
        assert_eq!(b.payload(&values[1]), b"data set");
        assert!(matches!(
            b.read_frame().await.unwrap(),
            Frame::Other(Pdu::ReleaseRQ)
        ));
        // a value whose item length overruns its PDU is refused
        let (c, mut d) = tokio::io::duplex(1 << 16);
        let mut c = PduStream::new(c, 16_384);
        d.write_all(&[0x04, 0, 0, 0, 0, 8, 0, 0, 0, 9, 1, 3, 0xAA, 0xBB])
            .await
            .unwrap();
        assert!(matches!(c.read_frame().await, Err(WireError::Malformed(_))));
    }
}
