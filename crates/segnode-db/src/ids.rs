//! Identifiers of the rows the index creates itself (jobs, outbox items) and of workers.

/// A random identifier for jobs, outbox items and workers.
pub fn new_id() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}
