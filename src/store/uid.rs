//! UID validation. Store paths are built from UIDs, so only strings that are valid DICOM UIDs (PS3.5
//! §9.1: digits and dots, ≤ 64 characters, no empty or leading-zero components) can ever reach the
//! file system; anything else is rejected before a path exists.

/// Why a string is not a UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("empty")]
    Empty,
    #[error("longer than 64 characters")]
    TooLong,
    #[error("has a character other than digits and dots")]
    BadCharacter,
    #[error("has an empty component")]
    EmptyComponent,
    #[error("has a component with a leading zero")]
    LeadingZero,
}

/// Trim the padding a UID may carry on the wire (trailing NUL or space).
pub fn trim(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' ']).trim_start_matches(' ')
}

/// Check a (trimmed) UID.
pub fn validate(uid: &str) -> Result<(), UidError> {
    if uid.is_empty() {
        return Err(UidError::Empty);
    }
    if uid.len() > 64 {
        return Err(UidError::TooLong);
    }
    if !uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(UidError::BadCharacter);
    }
    for comp in uid.split('.') {
        if comp.is_empty() {
            return Err(UidError::EmptyComponent);
        }
        if comp.len() > 1 && comp.starts_with('0') {
            return Err(UidError::LeadingZero);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_uids() {
        assert_eq!(validate("1.2.840.10008.5.1.4.1.1.2"), Ok(()));
        assert_eq!(
            validate("1.3.12.2.1107.5.1.4.60064.30000022120808113428000016573"),
            Ok(())
        );
        assert_eq!(validate("2.25.0"), Ok(()));
    }

    #[test]
    fn rejects_what_could_escape_a_path() {
        assert_eq!(validate(""), Err(UidError::Empty));
        assert_eq!(validate("../../etc/passwd"), Err(UidError::BadCharacter));
        assert_eq!(validate("1.2/3"), Err(UidError::BadCharacter));
        assert_eq!(validate("1..2"), Err(UidError::EmptyComponent));
        assert_eq!(validate(".1.2"), Err(UidError::EmptyComponent));
        assert_eq!(validate("1.02"), Err(UidError::LeadingZero));
        assert_eq!(validate(&"1".repeat(65)), Err(UidError::TooLong));
        assert_eq!(trim("1.2.3\0"), "1.2.3");
    }
}
