//! A test hook that kills the process at one step of filing an instance, so the tests can show that a
//! crash at any step loses nothing that was acknowledged and leaves store and index consistent once the
//! node starts again (`tests/crash.rs`).
//!
//! `SEGNODE_TEST_CRASH_AT=<step>` (read once) names the step; the process aborts there — no destructors,
//! no flush, like `kill -9` or a power cut as far as segnode's own state is concerned. Unset (always, in
//! production), each step costs one load of an initialised cell.

use std::sync::OnceLock;

/// The steps of filing, in the order they happen (the durability order README documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The temporary file's data is on disk (fdatasync).
    Synced,
    /// Renamed into place, before the directory fsync.
    Renamed,
    /// Rename made durable (directory fsync); nothing in the index yet.
    Published,
    /// The index row is committed; the C-STORE response not sent yet.
    Indexed,
    /// Journal: the record is durable (its group commit returned); the C-STORE response not sent yet,
    /// nothing materialised.
    Journaled,
    /// Journal: the first file of a batch of several is renamed into place, the others not.
    MidBatch,
    /// Journal: a batch's files are synced, in place and their directories fsync'd; no index row yet.
    Placed,
    /// Journal: a batch's index rows are committed; the checkpoint not advanced yet.
    BatchIndexed,
    /// Journal read back at start: a replayed batch's files are in place, before its index rows.
    Replaying,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Synced,
        Step::Renamed,
        Step::Published,
        Step::Indexed,
        Step::Journaled,
        Step::MidBatch,
        Step::Placed,
        Step::BatchIndexed,
        Step::Replaying,
    ];

    /// The value of `SEGNODE_TEST_CRASH_AT` that names this step.
    pub fn name(self) -> &'static str {
        match self {
            Step::Synced => "synced",
            Step::Renamed => "renamed",
            Step::Published => "published",
            Step::Indexed => "indexed",
            Step::Journaled => "journaled",
            Step::MidBatch => "mid-batch",
            Step::Placed => "placed",
            Step::BatchIndexed => "batch-indexed",
            Step::Replaying => "replaying",
        }
    }
}

fn armed() -> Option<Step> {
    static ARMED: OnceLock<Option<Step>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let v = std::env::var("SEGNODE_TEST_CRASH_AT").ok()?;
        Step::ALL.into_iter().find(|s| s.name() == v)
    })
}

/// Filing reached `step`: abort here when the hook names it.
pub fn reached(step: Step) {
    if armed() == Some(step) {
        eprintln!("SEGNODE_TEST_CRASH_AT={}: aborting", step.name());
        std::process::abort();
    }
}

/// `SEGNODE_TEST_MATERIALISE_HOLD=<n>` (read once): the journal's materialiser gathers `n` records (or
/// waits 5 s) before each batch, so that the tests can crash it in the middle of a batch of several.
pub fn hold() -> Option<usize> {
    static HOLD: OnceLock<Option<usize>> = OnceLock::new();
    *HOLD.get_or_init(|| {
        std::env::var("SEGNODE_TEST_MATERIALISE_HOLD")
            .ok()?
            .parse()
            .ok()
    })
}
