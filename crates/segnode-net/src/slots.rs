//! Per-caller association limits: a calling AE title may be given its own bound on concurrent
//! associations, below the node's `max_associations`, so one busy (or misbehaving) sender cannot take
//! every slot from the others. A slot is held by a [`Slot`] guard for the life of the association.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Concurrent associations per calling AE title, for the titles that have a limit.
#[derive(Debug, Default)]
pub struct CallerSlots {
    limits: HashMap<String, usize>,
    busy: Mutex<HashMap<String, usize>>,
}

/// One caller's association slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<CallerSlots>,
    ae: String,
}

impl CallerSlots {
    /// `limits`: calling AE title → most concurrent associations (titles without one are unbounded
    /// here; the node's limit still applies).
    pub fn new(limits: impl IntoIterator<Item = (String, usize)>) -> Arc<CallerSlots> {
        Arc::new(CallerSlots {
            limits: limits
                .into_iter()
                .map(|(ae, n)| (ae.trim().to_string(), n))
                .collect(),
            busy: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `calling_ae`, or `None` when it already holds its limit.
    pub fn take(self: &Arc<Self>, calling_ae: &str) -> Option<Option<Slot>> {
        let ae = calling_ae.trim();
        let Some(&limit) = self.limits.get(ae) else {
            return Some(None);
        };
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let n = busy.entry(ae.to_string()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(Slot {
            slots: self.clone(),
            ae: ae.to_string(),
        }))
    }

    /// Associations `calling_ae` holds now (counted only for titles with a limit).
    pub fn busy(&self, calling_ae: &str) -> usize {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.get(calling_ae.trim()).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = busy.get_mut(&self.ae) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_callers_hold_at_most_their_slots() {
        let s = CallerSlots::new([("CT01".to_string(), 2)]);
        let a = s.take("CT01").unwrap();
        let b = s.take("CT01 ").unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(s.take("CT01").is_none());
        assert!(matches!(s.take("OTHER"), Some(None)));
        drop(a);
        assert_eq!(s.busy("CT01"), 1);
        assert!(s.take("CT01").is_some());
    }
}
