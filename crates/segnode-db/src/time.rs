//! Time as the index stores it (milliseconds since the Unix epoch, BIGINT) and the retry delays the
//! queue and the outbox schedule with.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Exponential backoff with ±25 % jitter: `base · 2^(attempt-1)`, capped.
pub fn backoff_ms(attempt: i64, base_s: f64, max_s: f64) -> i64 {
    let exp = base_s * 2f64.powi((attempt.max(1) - 1).min(30) as i32);
    let jitter = 0.75 + 0.5 * rand::random::<f64>();
    (exp.min(max_s) * jitter * 1000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let b1 = backoff_ms(1, 2.0, 60.0);
            let b3 = backoff_ms(3, 2.0, 60.0);
            let b20 = backoff_ms(20, 2.0, 60.0);
            assert!((1500..=2500).contains(&b1), "{b1}");
            assert!((6000..=10000).contains(&b3), "{b3}");
            assert!(b20 <= 75_000, "{b20}");
        }
    }
}
