//! The completion tracker: a loop over the series still RECEIVING that marks each COMPLETE, with the
//! reason recorded, on the first of these evidences:
//!
//! - **announced count**: the instances announced by ImagesInAcquisition (0020,1002) have all arrived;
//! - **release + stack**: every association that carried this revision has ended, at least one of
//!   them with a normal release, `settle_s`
//!   passed with no new instance, and the slices form one contiguous stack (or there is no slice
//!   geometry at all: a SEG, an RT structure set, a multi-frame object);
//! - **quiet period**: nothing arrived for `quiet_period_s` (the fixed timer the other tools use alone).
//!
//! Completion is a conditional update in the index (same revision, same last-received time and
//! instance count), so a late instance or a second tracker on another receiver can never complete a
//! series twice. On a shared database every receiver's tracker sees every receiver's instances and
//! associations: a series whose instances arrive at two receivers completes once both have ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::geometry::{check_stack, Slice, StackProblem};
use crate::config::CompletionSettings;
use segnode_db::instances::SliceRecord;
use segnode_db::series::SeriesRecord;
use segnode_db::{now_ms, AssociationState, Index, IndexError};

pub struct Tracker {
    index: Index,
    settings: CompletionSettings,
    wake: Arc<Notify>,
    /// Last "waiting" reason logged per (series, revision), to log each once.
    waiting: HashMap<(String, i64), String>,
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
        }
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
        for s in open {
            if let Some(reason) = self.evidence(&s, now).await? {
                if self.index.complete_series(&s, &reason).await? {
                    info!(
                        series = %s.series_uid,
                        revision = s.revision,
                        instances = s.instance_count,
                        modality = ?s.modality,
                        latency_ms = now - s.last_received_ms,
                        reason = %reason,
                        "series complete"
                    );
                }
            }
        }
        Ok(())
    }

    async fn evidence(&mut self, s: &SeriesRecord, now: i64) -> Result<Option<String>, IndexError> {
        let quiet_ms = now - s.last_received_ms;
        if let Some(expected) = s.expected_instances {
            if expected > 0 && s.instance_count == expected {
                return Ok(Some(format!(
                    "all {expected} instances announced by ImagesInAcquisition received"
                )));
            }
        }
        let settle_ms = (self.settings.settle_s * 1000.0) as i64;
        let quiet_limit_ms = (self.settings.quiet_period_s * 1000.0) as i64;
        let mut stack_note = None;
        if quiet_ms >= settle_ms {
            let states = self
                .index
                .series_association_states(&s.series_uid, s.revision)
                .await?;
            // every carrier has ended and at least one released normally (a sender that aborted and
            // then resent the rest counts; the stack check below still catches missing slices)
            let ended = !states.contains(&AssociationState::Open);
            let released = states.contains(&AssociationState::Released);
            if ended && released {
                let slices: Vec<Slice> = self
                    .index
                    .series_slices(&s.series_uid)
                    .await?
                    .into_iter()
                    .map(slice)
                    .collect();
                let settle = self.settings.settle_s;
                match check_stack(&slices, self.settings.spacing_tolerance) {
                    Ok(stack) => {
                        return Ok(Some(format!(
                            "association released, {settle} s settled, contiguous stack of {} slices ({:.3} mm steps)",
                            stack.slices, stack.spacing
                        )))
                    }
                    Err(StackProblem::NoGeometry) => {
                        return Ok(Some(format!(
                            "association released, {settle} s settled, {} instance(s) without slice geometry",
                            s.instance_count
                        )))
                    }
                    Err(problem) => stack_note = Some(problem.to_string()),
                }
            } else {
                stack_note = Some(if states.is_empty() {
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
            return Ok(Some(reason));
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
