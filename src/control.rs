//! Pause / resume switches of this process (console actions): while processing is paused the workers
//! claim no new job (a running one finishes); while delivery is paused the dispatcher sends nothing.
//! Receiving never pauses (a PACS must not be refused because someone is looking at the console). The
//! switches are per process and not persisted: a restart resumes everything.

use std::sync::atomic::{AtomicBool, Ordering};

static PROCESSING_PAUSED: AtomicBool = AtomicBool::new(false);
static DELIVERY_PAUSED: AtomicBool = AtomicBool::new(false);

/// What can be paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Processing,
    Delivery,
}

impl Activity {
    pub fn parse(s: &str) -> Option<Activity> {
        match s {
            "processing" => Some(Activity::Processing),
            "delivery" => Some(Activity::Delivery),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activity::Processing => "processing",
            Activity::Delivery => "delivery",
        }
    }

    fn flag(self) -> &'static AtomicBool {
        match self {
            Activity::Processing => &PROCESSING_PAUSED,
            Activity::Delivery => &DELIVERY_PAUSED,
        }
    }
}

/// Whether `what` is paused in this process.
pub fn paused(what: Activity) -> bool {
    what.flag().load(Ordering::Relaxed)
}

/// Pause (`true`) or resume `what`; returns whether that changed anything.
pub fn set_paused(what: Activity, pause: bool) -> bool {
    what.flag().swap(pause, Ordering::Relaxed) != pause
}
