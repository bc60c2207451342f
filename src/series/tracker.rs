//! The completion tracker: a loop over the series still RECEIVING that marks each COMPLETE, with the
//! reason recorded, on the first of these evidences:
//!
//! - **announced count**: the instances announced by ImagesInAcquisition (0020,1002) have all arrived;
//! - **release + stack**: every association that carried this revision has ended, at least one of
//!   them with a normal release, and the slices form one contiguous stack (or there is no slice
//!   geometry at all: a SEG, an RT structure set, a multi-frame object); then either at once
//!   (`fast_release`: no other association from a carrier's AE title or host is open, and the caller is
//!   not one that splits series: listed in `settle_callers` or learnt from a late instance after an
//!   earlier completion at release) or after `settle_s` with no new instance;
//! - **quiet period**: nothing arrived for `quiet_period_s` (the fixed timer the other tools use alone).
//!
//! Completion is a conditional update in the index (same revision, same last-received time and
//! instance count), so a late instance or a second tracker on another receiver can never complete a
//! series twice. On a shared database every receiver's tracker sees every receiver's instances and
//! associations: a series whose instances arrive at two receivers completes once both have ended.
//!
//! With the ingest journal, acknowledged instances reach the index a batch later: a series with
//! instances of this process still in the journal is not evaluated until they are indexed
//! ([`Tracker::with_in_flight`]), and an association's end is recorded only once its instances are.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::geometry::{check_stack, Slice, StackProblem};
use crate::config::CompletionSettings;
use segnode_db::associations::Carrier;
use segnode_db::instances::SliceRecord;
use segnode_db::series::SeriesRecord;
use segnode_db::{now_ms, AssociationState, Index, IndexError};

pub struct Tracker {
    index: Index,
    settings: CompletionSettings,
    wake: Arc<Notify>,
    /// Last "waiting" reason logged per (series, revision), to log each once.
    waiting: HashMap<(String, i64), String>,
    /// This process's ingest journal: series with instances in it are not evaluated yet.
    in_flight: Option<Arc<crate::store::materialise::Filing>>,
}

impl Tracker {
    /// `wake`: notified when an association of this process ended. A completed series wakes the
    /// routers through the index (every receiver's, on PostgreSQL).
    pub fn new(index: Index, settings: CompletionSettings, wake: Arc<Notify>) -> Tracker {
        Tracker {
            index,
            settings,
            wake,
            waiting: HashMap::new(),
            in_flight: None,
        }
    }

    /// Account for the instances acknowledged but still in this process's ingest journal.
    pub fn with_in_flight(
        mut self,
        journal: Option<Arc<crate::store::materialise::Filing>>,
    ) -> Tracker {
        self.in_flight = journal;
        self
    }

    /// Run until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_ms);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(poll) => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.tick().await {
                warn!(error = %e, "completion check failed; retrying");
            }
        }
    }

    /// One pass over the open series.
    pub async fn tick(&mut self) -> Result<(), IndexError> {
        let now = now_ms();
        let open = self.index.receiving_series().await?;
        self.waiting.retain(|(uid, rev), _| {
            open.iter()
                .any(|s| &s.series_uid == uid && s.revision == *rev)
        });
        if open.is_empty() {
            return Ok(());
        }
        let senders = Senders {
            open: self.index.open_associations().await?,
            splitting: self
                .index
                .splitting_callers_learnt()
                .await?
                .into_iter()
                .map(|c| c.calling_ae)
                .collect(),
        };
        for s in open {
            if self
                .in_flight
                .as_ref()
                .is_some_and(|j| j.series_in_flight(&s.series_uid))
            {
                continue; // its newest instances are not in the index yet
            }
            if let Some(done) = self.evidence(&s, now, &senders).await? {
                if self
                    .index
                    .complete_series(&s, &done.reason, done.at_release)
                    .await?
                {
                    crate::metrics::metrics()
                        .series_completed(done.basis, (now - s.last_received_ms) as f64 / 1000.0);
                    info!(
                        series = %s.series_uid,
                        revision = s.revision,
                        instances = s.instance_count,
                        modality = ?s.modality,
                        latency_ms = now - s.last_received_ms,
                        reason = %done.reason,
                        "series complete"
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether this caller's series wait `settle_s` after the release (configured or learnt to split
    /// series over associations, or completion at release switched off).
    fn waits(&self, calling_ae: &str, senders: &Senders) -> bool {
        !self.settings.fast_release
            || self
                .settings
                .settle_callers
                .iter()
                .any(|c| c.trim() == calling_ae)
            || senders.splitting.iter().any(|c| c == calling_ae)
    }

    async fn evidence(
        &mut self,
        s: &SeriesRecord,
        now: i64,
        senders: &Senders,
    ) -> Result<Option<Completion>, IndexError> {
        let quiet_ms = now - s.last_received_ms;
        if let Some(expected) = s.expected_instances {
            if expected > 0 && s.instance_count == expected {
                return Ok(Some(Completion::after_wait(
                    "announced_count",
                    format!("all {expected} instances announced by ImagesInAcquisition received"),
                )));
            }
        }
        let settle_ms = (self.settings.settle_s * 1000.0) as i64;
        let quiet_limit_ms = (self.settings.quiet_period_s * 1000.0) as i64;
        let settled = quiet_ms >= settle_ms;
        let first_caller = s.calling_ae.as_deref().unwrap_or_default();
        // completion at release: only when the first caller neither waits nor has another association
        // open (the cheap test first: a series still arriving skips the carriers query)
        let at_release_candidate = !settled
            && !self.waits(first_caller, senders)
            && !senders.open.iter().any(|o| o.calling_ae == first_caller);
        let mut stack_note = None;
        if settled || at_release_candidate {
            let carriers = self
                .index
                .series_carriers(&s.series_uid, s.revision)
                .await?;
            // every carrier has ended and at least one released normally (a sender that aborted and
            // then resent the rest counts; the stack check below still catches missing slices)
            let ended = !carriers.iter().any(|c| c.state == AssociationState::Open);
            let released = carriers
                .iter()
                .any(|c| c.state == AssociationState::Released);
            // at release: no carrier's caller waits, and no association from a carrier's AE title or
            // host is open (it could carry more of this series)
            let at_release = at_release_candidate
                && carriers.iter().all(|c| {
                    !self.waits(&c.calling_ae, senders)
                        && !senders
                            .open
                            .iter()
                            .any(|o| o.calling_ae == c.calling_ae || o.host() == c.host())
                });
            if ended && released && (settled || at_release) {
                let basis = if settled {
                    format!("{} s settled", self.settings.settle_s)
                } else {
                    "completed at release (no other association from its caller open)".to_string()
                };
                let slices: Vec<Slice> = self
                    .index
                    .series_slices(&s.series_uid)
                    .await?
                    .into_iter()
                    .map(slice)
                    .collect();
                let reason = match check_stack(&slices, self.settings.spacing_tolerance) {
                    Ok(stack) => Some(format!(
                        "association released, {basis}, contiguous stack of {} slices ({:.3} mm steps)",
                        stack.slices, stack.spacing
                    )),
                    Err(StackProblem::NoGeometry) => Some(format!(
                        "association released, {basis}, {} instance(s) without slice geometry",
                        s.instance_count
                    )),
                    Err(problem) => {
                        stack_note = Some(problem.to_string());
                        None
                    }
                };
                if let Some(reason) = reason {
                    return Ok(Some(Completion {
                        reason,
                        at_release: !settled,
                        basis: if settled { "settled" } else { "at_release" },
                    }));
                }
            } else if settled {
                stack_note = Some(if carriers.is_empty() {
                    "no association record (recovered instances)".to_string()
                } else if !ended {
                    "an association that carried it is still open".to_string()
                } else {
                    "every association that carried it was aborted".to_string()
                });
            }
        }
        if quiet_ms >= quiet_limit_ms {
            let mut reason = format!("quiet period of {} s elapsed", self.settings.quiet_period_s);
            if let Some(note) = &stack_note {
                reason.push_str(&format!(" (release evidence not usable: {note})"));
            }
            return Ok(Some(Completion::after_wait("quiet_period", reason)));
        }
        if let Some(note) = stack_note {
            let key = (s.series_uid.clone(), s.revision);
            if self.waiting.get(&key) != Some(&note) {
                debug!(series = %s.series_uid, revision = s.revision, why = %note, "waiting for the quiet period");
                self.waiting.insert(key, note);
            }
        }
        Ok(None)
    }
}

/// Who is sending now, read once per pass.
struct Senders {
    /// Associations open on any receiver sharing the index.
    open: Vec<Carrier>,
    /// Calling AE titles learnt to split series over associations.
    splitting: Vec<String>,
}

/// A completion the evidence supports.
struct Completion {
    reason: String,
    /// Completed at the release itself, before `settle_s` passed.
    at_release: bool,
    /// The evidence, as the `basis` label of `segnode_series_completed_total`.
    basis: &'static str,
}

impl Completion {
    fn after_wait(basis: &'static str, reason: String) -> Completion {
        Completion {
            reason,
            at_release: false,
            basis,
        }
    }
}

/// The stack check's input from the index's record of an instance.
fn slice(r: SliceRecord) -> Slice {
    Slice {
        sop_uid: r.sop_uid,
        ipp: r.ipp,
        iop: r.iop,
        pixel_spacing: r.pixel_spacing,
        rows: r.rows,
        columns: r.columns,
        number_of_frames: r.number_of_frames,
    }
}
