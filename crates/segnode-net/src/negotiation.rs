//! A-ASSOCIATE negotiation, both roles, as pure functions from PDUs to PDUs.
//!
//! Acceptor: screen the request (protocol version, application context), then — once the application
//! has admitted the caller — answer every proposed presentation context: accepted with the first
//! transfer syntax the requestor proposes that we accept and can decode, or rejected with "abstract
//! syntax not supported" / "transfer syntaxes not supported". Maximum PDU lengths are exchanged;
//! SOP class extended negotiation, SCU/SCP role selection and user identity are not answered (PS3.7
//! D.3.3: an acceptor may ignore them; a positive identity response is only sent when one is given).
//! Requestor: build the A-ASSOCIATE-RQ and read the A-ASSOCIATE-AC back.
//! Kept apart from any I/O so that it can be tested and reasoned about on its own.

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ,
    PresentationContextNegotiated, PresentationContextProposed, PresentationContextResult,
    PresentationContextResultReason, UserIdentity, UserVariableItem, DEFAULT_MAX_PDU,
    MAXIMUM_PDU_SIZE,
};

/// The DICOM application context name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// The upper-layer protocol version we implement (bit 0 of the protocol-version field).
pub const PROTOCOL_VERSION: u16 = 1;
/// The transfer syntax named in a rejected presentation context (its value is not significant).
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// Why a requestor's view of the negotiation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NegotiationError {
    #[error("association rejected: {0}")]
    Rejected(String),
    #[error("the acceptor accepted no presentation context")]
    NoContext,
    #[error("unexpected answer to A-ASSOCIATE-RQ: {0}")]
    Unexpected(&'static str),
    #[error("protocol version {0} not supported")]
    ProtocolVersion(u16),
}

/// Trim the padding a UID may carry on the wire (trailing NUL or space).
pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' ']).trim_start_matches(' ')
}

/// A permanent rejection by the service user (us) for `reason`.
pub fn reject_by_user(reason: AssociationRJServiceUserReason) -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(reason),
    }
}

/// Check what must hold before anything else is looked at: bit 0 of the protocol version (PS3.8
/// 9.3.2: the only bit a version-1 receiver tests) and the DICOM application context.
pub fn screen(rq: &AssociationRQ) -> Result<(), AssociationRJ> {
    if rq.protocol_version & PROTOCOL_VERSION == 0 {
        return Err(AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
        });
    }
    if trim_uid(&rq.application_context_name) != APPLICATION_CONTEXT {
        return Err(reject_by_user(
            AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
        ));
    }
    Ok(())
}

/// The requestor's maximum PDU length (absent: the default; 0: unlimited).
pub fn requestor_max_pdu(rq: &AssociationRQ) -> u32 {
    rq.user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(0) => Some(MAXIMUM_PDU_SIZE),
            UserVariableItem::MaxLength(n) => Some((*n).min(MAXIMUM_PDU_SIZE)),
            _ => None,
        })
        .unwrap_or(DEFAULT_MAX_PDU)
}

/// The user identity the requestor sent, if any (for the application to judge; never answered).
pub fn user_identity(rq: &AssociationRQ) -> Option<&UserIdentity> {
    rq.user_variables.iter().find_map(|v| match v {
        UserVariableItem::UserIdentityItem(u) => Some(u),
        _ => None,
    })
}

/// What the acceptor offers.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// Our maximum PDU length.
    pub max_pdu: u32,
    pub abstract_syntaxes: &'a [String],
    /// Transfer syntaxes we accept for the classes of `decodable_only` (each must also be decodable by
    /// this build's registry).
    pub transfer_syntaxes: &'a [String],
    /// Abstract syntaxes taken only in `transfer_syntaxes`; any other accepted abstract syntax is taken
    /// in whatever transfer syntax the requestor proposes whose data set this build can read (stored as
    /// received, never transcoded).
    pub decodable_only: &'a [String],
}

/// The acceptor's answer to an admitted request.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub ac: AssociationAC,
    /// Every proposed context with its result (accepted or not).
    pub contexts: Vec<PresentationContextNegotiated>,
    /// The requestor's maximum PDU length.
    pub peer_max_pdu: u32,
}

/// Answer every presentation context of an admitted request.
pub fn accept(rq: &AssociationRQ, offer: &Offer<'_>) -> Accepted {
    let contexts: Vec<PresentationContextNegotiated> = rq
        .presentation_contexts
        .iter()
        .map(|pc| {
            let abstract_syntax = trim_uid(&pc.abstract_syntax).to_string();
            let (reason, transfer_syntax) = if !offer
                .abstract_syntaxes
                .iter()
                .any(|a| *a == abstract_syntax)
            {
                (
                    PresentationContextResultReason::AbstractSyntaxNotSupported,
                    IMPLICIT_LE.to_string(),
                )
            } else {
                // the requestor's order of preference, as dicom-ul's acceptor does
                let strict = offer.decodable_only.iter().any(|a| *a == abstract_syntax);
                match pc.transfer_syntaxes.iter().map(|t| trim_uid(t)).find(|t| {
                    (!strict || offer.transfer_syntaxes.iter().any(|o| o == t))
                        && dicom_ul::association::server::is_supported(t)
                }) {
                    Some(ts) => (PresentationContextResultReason::Acceptance, ts.to_string()),
                    None => (
                        PresentationContextResultReason::TransferSyntaxesNotSupported,
                        IMPLICIT_LE.to_string(),
                    ),
                }
            };
            PresentationContextNegotiated {
                id: pc.id,
                reason,
                transfer_syntax,
                abstract_syntax,
            }
        })
        .collect();
    let ac = AssociationAC {
        protocol_version: PROTOCOL_VERSION,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: rq.application_context_name.clone(),
        presentation_contexts: contexts
            .iter()
            .map(|pc| PresentationContextResult {
                id: pc.id,
                reason: pc.reason.clone(),
                transfer_syntax: pc.transfer_syntax.clone(),
            })
            .collect(),
        user_variables: vec![
            UserVariableItem::MaxLength(offer.max_pdu),
            UserVariableItem::ImplementationClassUID(dicom_ul::IMPLEMENTATION_CLASS_UID.into()),
            UserVariableItem::ImplementationVersionName(
                dicom_ul::IMPLEMENTATION_VERSION_NAME.into(),
            ),
        ],
    };
    Accepted {
        ac,
        contexts,
        peer_max_pdu: requestor_max_pdu(rq),
    }
}

/// An A-ASSOCIATE-RQ proposing `contexts` (abstract syntax, transfer syntaxes), numbered 1, 3, 5, …
pub fn request(
    calling_ae: &str,
    called_ae: &str,
    max_pdu: u32,
    contexts: &[(String, Vec<String>)],
) -> AssociationRQ {
    AssociationRQ {
        protocol_version: PROTOCOL_VERSION,
        calling_ae_title: calling_ae.to_string(),
        called_ae_title: called_ae.to_string(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: contexts
            .iter()
            .enumerate()
            .map(|(i, (abs, ts))| PresentationContextProposed {
                id: (2 * i + 1) as u8,
                abstract_syntax: abs.clone(),
                transfer_syntaxes: ts.clone(),
            })
            .collect(),
        user_variables: vec![
            UserVariableItem::MaxLength(max_pdu),
            UserVariableItem::ImplementationClassUID(dicom_ul::IMPLEMENTATION_CLASS_UID.into()),
            UserVariableItem::ImplementationVersionName(
                dicom_ul::IMPLEMENTATION_VERSION_NAME.into(),
            ),
        ],
    }
}

/// What the requestor learnt from the acceptor.
#[derive(Debug, Clone)]
pub struct Agreed {
    /// The accepted contexts only, with the abstract syntax we proposed on each.
    pub contexts: Vec<PresentationContextNegotiated>,
    /// The acceptor's maximum PDU length.
    pub peer_max_pdu: u32,
}

/// Read the acceptor's answer to `rq`.
pub fn agreed(rq: &AssociationRQ, answer: dicom_ul::Pdu) -> Result<Agreed, NegotiationError> {
    use dicom_ul::Pdu;
    let ac = match answer {
        Pdu::AssociationAC(ac) => ac,
        Pdu::AssociationRJ(rj) => return Err(NegotiationError::Rejected(rj.source.to_string())),
        Pdu::AbortRQ { .. } => return Err(NegotiationError::Unexpected("A-ABORT")),
        Pdu::Unknown { .. } => return Err(NegotiationError::Unexpected("unknown PDU")),
        _ => return Err(NegotiationError::Unexpected("not an A-ASSOCIATE-AC")),
    };
    if ac.protocol_version != PROTOCOL_VERSION {
        return Err(NegotiationError::ProtocolVersion(ac.protocol_version));
    }
    let peer_max_pdu = ac
        .user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(0) => Some(MAXIMUM_PDU_SIZE),
            UserVariableItem::MaxLength(n) => Some((*n).min(MAXIMUM_PDU_SIZE)),
            _ => None,
        })
        .unwrap_or(DEFAULT_MAX_PDU);
    let contexts: Vec<PresentationContextNegotiated> = ac
        .presentation_contexts
        .into_iter()
        .filter(|c| c.reason == PresentationContextResultReason::Acceptance)
        .filter_map(|c| {
            let proposed = rq.presentation_contexts.iter().find(|p| p.id == c.id)?;
            Some(PresentationContextNegotiated {
                id: c.id,
                reason: c.reason,
                transfer_syntax: trim_uid(&c.transfer_syntax).to_string(),
                abstract_syntax: trim_uid(&proposed.abstract_syntax).to_string(),
            })
        })
        .collect();
    if contexts.is_empty() {
        return Err(NegotiationError::NoContext);
    }
    Ok(Agreed {
        contexts,
        peer_max_pdu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_lists() -> (Vec<String>, Vec<String>) {
        (
            vec![
                "1.2.840.10008.1.1".into(),
                "1.2.840.10008.5.1.4.1.1.2".into(),
            ],
            vec!["1.2.840.10008.1.2.1".into(), "1.2.840.10008.1.2".into()],
        )
    }

    #[test]
    fn contexts_are_answered_one_by_one() {
        let (mut abs, ts) = offer_lists();
        abs.push("1.2.840.10008.5.1.4.1.1.88.59".into()); // Key Object Selection: any readable syntax
        let strict = vec!["1.2.840.10008.5.1.4.1.1.2".to_string()];
        let offer = Offer {
            max_pdu: 16_384,
            abstract_syntaxes: &abs,
            transfer_syntaxes: &ts,
            decodable_only: &strict,
        };
        let rq = request(
            "SCU",
            "SCP",
            0,
            &[
                (
                    "1.2.840.10008.1.1\0".into(),
                    vec!["1.2.840.10008.1.2".into()],
                ),
                // the requestor's preference wins among those we take
                (
                    "1.2.840.10008.5.1.4.1.1.2".into(),
                    vec![
                        "1.2.840.10008.1.2.4.80".into(),
                        "1.2.840.10008.1.2".into(),
                        "1.2.840.10008.1.2.1".into(),
                    ],
                ),
                ("1.2.3.4".into(), vec!["1.2.840.10008.1.2".into()]),
                (
                    "1.2.840.10008.5.1.4.1.1.2".into(),
                    vec!["1.2.840.10008.1.2.4.80".into()],
                ),
                // a class no pipeline reads is stored as received: JPEG-LS taken as is
                (
                    "1.2.840.10008.5.1.4.1.1.88.59".into(),
                    vec!["1.2.840.10008.1.2.4.80".into()],
                ),
            ],
        );
        assert!(screen(&rq).is_ok());
        let a = accept(&rq, &offer);
        let reasons: Vec<_> = a
            .contexts
            .iter()
            .map(|c| (c.id, c.reason.clone()))
            .collect();
        use PresentationContextResultReason::*;
        assert_eq!(
            reasons,
            vec![
                (1, Acceptance),
                (3, Acceptance),
                (5, AbstractSyntaxNotSupported),
                (7, TransferSyntaxesNotSupported),
                (9, Acceptance)
            ]
        );
        assert_eq!(a.contexts[4].transfer_syntax, "1.2.840.10008.1.2.4.80");
        assert_eq!(a.contexts[1].transfer_syntax, "1.2.840.10008.1.2");
        assert_eq!(a.peer_max_pdu, MAXIMUM_PDU_SIZE);
        assert!(a
            .ac
            .user_variables
            .contains(&UserVariableItem::MaxLength(16_384)));
        // and the requestor's reading of that answer
        let agreed = agreed(&rq, dicom_ul::Pdu::AssociationAC(a.ac)).unwrap();
        assert_eq!(agreed.contexts.len(), 3);
        assert_eq!(agreed.contexts[0].abstract_syntax, "1.2.840.10008.1.1");
        assert_eq!(agreed.peer_max_pdu, 16_384);
    }

    #[test]
    fn screening() {
        let mut rq = request("SCU", "SCP", 0, &[]);
        rq.protocol_version = 2;
        assert_eq!(
            screen(&rq).unwrap_err().source,
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported
            )
        );
        rq.protocol_version = 3;
        rq.application_context_name = "1.2.3".into();
        assert_eq!(
            screen(&rq).unwrap_err().source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported
            )
        );
        rq.user_variables.clear();
        assert_eq!(requestor_max_pdu(&rq), DEFAULT_MAX_PDU);
    }
}
