//! New DICOM UIDs (`2.25.<128-bit random>`, PS3.5 B.2) and the current date/time in DICOM form.

/// A fresh UID under the `2.25` root from 128 random bits.
pub fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

/// Current UTC date and time as DICOM DA (`YYYYMMDD`) and TM (`HHMMSS`).
pub fn now_da_tm() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    da_tm_from_unix(secs)
}

/// DICOM DA (`YYYYMMDD`) and TM (`HHMMSS`) of a Unix time in seconds (UTC).
pub fn da_tm_from_unix(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil from days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert!(
            a.len() <= 64 && a.starts_with("2.25.") && a[5..].chars().all(|c| c.is_ascii_digit())
        );
        assert!(!a[5..].starts_with('0') || a.len() == 6);
    }

    #[test]
    fn unix_time_converts_to_dicom_date_time() {
        assert_eq!(da_tm_from_unix(0), ("19700101".into(), "000000".into()));
        assert_eq!(
            da_tm_from_unix(1_709_294_400 + 3723),
            ("20240301".into(), "130203".into())
        );
    }
}
