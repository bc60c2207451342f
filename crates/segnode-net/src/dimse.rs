//! DIMSE command sets: the group-0000 elements that head every DIMSE message, encoded and decoded in
//! Implicit VR Little Endian as PS3.7 §6.3.1 requires.
//!
//! dicom-ul stops at the association layer, so this module owns the message layer: parsing a received
//! command set into a typed [`Command`], and building the responses we send. Command sets are small and
//! have a fixed shape, so a direct codec is simpler and safer than a general data set parser: a malformed
//! command is a typed error, never a panic.

use std::collections::BTreeMap;

/// Command Field values (PS3.7 Annex E).
pub mod command_field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
}

/// DIMSE status codes we send (PS3.4 Annex B / PS3.7 Annex C), named as pynetdicom names them.
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (disk full, I/O error writing the instance).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (the data set's UIDs disagree with the command).
    pub const DATASET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Error: cannot understand (unparsable data set, missing or invalid Study / Series / SOP UIDs).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported on this presentation context.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
}

/// Command Data Set Type value meaning "no data set follows".
pub const NO_DATASET: u16 = 0x0101;

mod tag {
    pub const GROUP_LENGTH: u16 = 0x0000;
    pub const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
    pub const COMMAND_FIELD: u16 = 0x0100;
    pub const MESSAGE_ID: u16 = 0x0110;
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
    pub const PRIORITY: u16 = 0x0700;
    pub const COMMAND_DATASET_TYPE: u16 = 0x0800;
    pub const STATUS: u16 = 0x0900;
    pub const ERROR_COMMENT: u16 = 0x0902;
    pub const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
    pub const MOVE_ORIGINATOR_AE: u16 = 0x1030;
}

/// Why a command set could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DimseError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command set element ({0:04X},{1:04X}) outside group 0000")]
    WrongGroup(u16, u16),
    #[error("command set has no {0}")]
    Missing(&'static str),
    #[error("command element {0} has a bad length {1}")]
    BadLength(&'static str, usize),
}

/// A decoded command set: the elements we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class: Option<String>,
    pub affected_sop_instance: Option<String>,
    pub has_dataset: bool,
    pub priority: Option<u16>,
    pub move_originator_ae: Option<String>,
}

/// Decode a command set (Implicit VR Little Endian, group 0000).
pub fn decode(bytes: &[u8]) -> Result<Command, DimseError> {
    let mut elems: BTreeMap<u16, &[u8]> = BTreeMap::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos + 8).ok_or(DimseError::Truncated(pos))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if group != 0x0000 {
            return Err(DimseError::WrongGroup(group, element));
        }
        let start = pos + 8;
        let end = start.checked_add(len).ok_or(DimseError::Truncated(pos))?;
        let value = bytes.get(start..end).ok_or(DimseError::Truncated(pos))?;
        elems.insert(element, value);
        pos = end;
    }
    let us = |el: u16, name: &'static str| -> Result<Option<u16>, DimseError> {
        match elems.get(&el) {
            None => Ok(None),
            Some(v) if v.len() == 2 => Ok(Some(u16::from_le_bytes([v[0], v[1]]))),
            Some(v) => Err(DimseError::BadLength(name, v.len())),
        }
    };
    let text = |el: u16| -> Option<String> {
        elems.get(&el).map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .trim_start()
                .to_string()
        })
    };
    let field =
        us(tag::COMMAND_FIELD, "Command Field")?.ok_or(DimseError::Missing("Command Field"))?;
    let message_id = us(tag::MESSAGE_ID, "Message ID")?
        .or(us(
            tag::MESSAGE_ID_BEING_RESPONDED_TO,
            "Message ID Being Responded To",
        )?)
        .ok_or(DimseError::Missing("Message ID"))?;
    let dataset_type = us(tag::COMMAND_DATASET_TYPE, "Command Data Set Type")?
        .ok_or(DimseError::Missing("Command Data Set Type"))?;
    Ok(Command {
        field,
        message_id,
        affected_sop_class: text(tag::AFFECTED_SOP_CLASS_UID),
        affected_sop_instance: text(tag::AFFECTED_SOP_INSTANCE_UID),
        has_dataset: dataset_type != NO_DATASET,
        priority: us(tag::PRIORITY, "Priority")?,
        move_originator_ae: text(tag::MOVE_ORIGINATOR_AE),
    })
}

/// Builds a command set element by element (callers add them in ascending tag order).
#[derive(Default)]
struct Encoder {
    body: Vec<u8>,
}

impl Encoder {
    fn raw(&mut self, element: u16, value: &[u8]) {
        self.body.extend_from_slice(&0u16.to_le_bytes());
        self.body.extend_from_slice(&element.to_le_bytes());
        self.body
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.body.extend_from_slice(value);
    }
    fn us(&mut self, element: u16, v: u16) {
        self.raw(element, &v.to_le_bytes());
    }
    /// UI values are padded with NUL, text (LO, AE) with space, to even length.
    fn text(&mut self, element: u16, v: &str, pad: u8) {
        let mut bytes = v.as_bytes().to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(pad);
        }
        self.raw(element, &bytes);
    }
    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 12);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&tag::GROUP_LENGTH.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A response command set (C-STORE-RSP, C-ECHO-RSP, …) with no data set.
pub fn encode_response(
    field: u16,
    responding_to: u16,
    sop_class: &str,
    sop_instance: Option<&str>,
    status: u16,
    error_comment: Option<&str>,
) -> Vec<u8> {
    let mut e = Encoder::default();
    e.text(tag::AFFECTED_SOP_CLASS_UID, sop_class, 0);
    e.us(tag::COMMAND_FIELD, field);
    e.us(tag::MESSAGE_ID_BEING_RESPONDED_TO, responding_to);
    e.us(tag::COMMAND_DATASET_TYPE, NO_DATASET);
    e.us(tag::STATUS, status);
    if let Some(comment) = error_comment {
        // Error Comment is LO: at most 64 characters, no backslash
        let c: String = comment.chars().filter(|c| *c != '\\').take(64).collect();
        e.text(tag::ERROR_COMMENT, &c, b' ');
    }
    if let Some(uid) = sop_instance {
        e.text(tag::AFFECTED_SOP_INSTANCE_UID, uid, 0);
    }
    e.finish()
}

/// A C-STORE-RQ command set (used by the SCU side and by tests).
pub fn encode_store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    let mut e = Encoder::default();
    e.text(tag::AFFECTED_SOP_CLASS_UID, sop_class, 0);
    e.us(tag::COMMAND_FIELD, command_field::C_STORE_RQ);
    e.us(tag::MESSAGE_ID, message_id);
    e.us(tag::PRIORITY, 0);
    e.us(tag::COMMAND_DATASET_TYPE, 0x0000);
    e.text(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance, 0);
    e.finish()
}

/// A C-ECHO-RQ command set.
pub fn encode_echo_rq(message_id: u16) -> Vec<u8> {
    let mut e = Encoder::default();
    e.text(tag::AFFECTED_SOP_CLASS_UID, crate::sop::VERIFICATION, 0);
    e.us(tag::COMMAND_FIELD, command_field::C_ECHO_RQ);
    e.us(tag::MESSAGE_ID, message_id);
    e.us(tag::COMMAND_DATASET_TYPE, NO_DATASET);
    e.finish()
}

/// A P-DATA-TF PDU carrying one complete command set on presentation context `pc`.
pub fn command_pdu(pc: u8, bytes: Vec<u8>) -> dicom_ul::Pdu {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    dicom_ul::Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: bytes,
        }],
    }
}

/// Status of a response command set (for the SCU side).
pub fn response_status(bytes: &[u8]) -> Result<u16, DimseError> {
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let start = pos + 8;
        if element == tag::STATUS {
            let v = bytes
                .get(start..start + 2)
                .ok_or(DimseError::Truncated(pos))?;
            return Ok(u16::from_le_bytes([v[0], v[1]]));
        }
        pos = start.checked_add(len).ok_or(DimseError::Truncated(pos))?;
    }
    Err(DimseError::Missing("Status"))
}

/// Whether a status is a failure (not success, not a warning: PS3.7 C.1–C.4).
pub fn is_failure(status: u16) -> bool {
    !(status == status::SUCCESS
        || status == 0x0001
        || (status & 0xF000) == 0xB000
        || status == 0x0107
        || status == 0x0116)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trip() {
        let bytes = encode_store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5");
        let c = decode(&bytes).unwrap();
        assert_eq!(c.field, command_field::C_STORE_RQ);
        assert_eq!(c.message_id, 7);
        assert_eq!(
            c.affected_sop_class.as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert_eq!(c.affected_sop_instance.as_deref(), Some("1.2.3.4.5"));
        assert!(c.has_dataset);
        // group length counts every byte after itself
        let gl = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(gl, bytes.len() - 12);
    }

    #[test]
    fn response_has_status_and_comment_even_length() {
        let bytes = encode_response(
            command_field::C_STORE_RSP,
            3,
            "1.2.840.10008.5.1.4.1.1.2",
            Some("1.2.3"),
            status::CANNOT_UNDERSTAND,
            Some("no StudyInstanceUID"),
        );
        assert_eq!(bytes.len() % 2, 0);
        assert_eq!(response_status(&bytes).unwrap(), status::CANNOT_UNDERSTAND);
        let c = decode(&bytes).unwrap();
        assert_eq!(c.message_id, 3);
        assert!(!c.has_dataset);
        assert!(is_failure(status::CANNOT_UNDERSTAND));
        assert!(!is_failure(0xB000));
        assert!(!is_failure(status::SUCCESS));
    }

    #[test]
    fn malformed_commands_are_errors() {
        assert_eq!(decode(&[0, 0, 0, 1]), Err(DimseError::Truncated(0)));
        let mut bytes = encode_echo_rq(1);
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(decode(&bytes), Err(DimseError::Truncated(_))));
        // an element claiming 4 GB
        let mut huge = vec![0, 0, 0x00, 0x01];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        let wrong_group = [8u8, 0, 0x18, 0, 0, 0, 0, 0];
        assert_eq!(decode(&wrong_group), Err(DimseError::WrongGroup(8, 0x18)));
        // no command field
        assert_eq!(decode(&[]), Err(DimseError::Missing("Command Field")));
    }
}
