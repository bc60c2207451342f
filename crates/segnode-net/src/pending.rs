//! Connections still in their handshake: accepted, but no valid A-ASSOCIATE-RQ yet.
//!
//! Such a connection has proved nothing (no AE title, maybe not even a TLS certificate), so it must not
//! take one of the association slots: otherwise a few dozen idle TCP connections lock every sender out
//! for as long as they stay open (issue 14). Pending connections have their own bound, total and per
//! peer IP address, and a short timer ([`crate::ScpOptions::handshake_timeout`]).
//!
//! When a bound is reached the new connection is not refused: it **evicts** the oldest pending
//! connection of the peer address that holds the most (or of its own address, when that one is over its
//! own bound). A flood of idle connections therefore only churns through its own slots, while a real
//! sender, which sends its A-ASSOCIATE-RQ within milliseconds of connecting, gets through even from the
//! same address as the flood.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The bounds of the pending set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    /// Pending connections, all peers together (at least 1).
    pub total: usize,
    /// Pending connections of one peer address (at least 1).
    pub per_peer: usize,
}

struct Entry {
    peer: IpAddr,
    evict: oneshot::Sender<()>,
}

/// The set of pending connections (shared by every listener of a node).
pub struct PendingSet {
    limits: PendingLimits,
    /// Entries by admission number: the first is the oldest.
    entries: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

/// A connection's place in the pending set; dropping it (the A-ASSOCIATE-RQ arrived, or the connection
/// ended) frees the place.
pub struct Ticket {
    id: u64,
    set: Arc<PendingSet>,
    evicted: oneshot::Receiver<()>,
}

/// What admitting a connection did to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    /// The address whose oldest pending connection was evicted.
    pub peer: IpAddr,
}

impl PendingSet {
    pub fn new(limits: PendingLimits) -> Arc<PendingSet> {
        Arc::new(PendingSet {
            limits: PendingLimits {
                total: limits.total.max(1),
                per_peer: limits.per_peer.max(1),
            },
            entries: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// Admit a new connection from `peer`, evicting one pending connection when a bound is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> (Ticket, Option<Eviction>) {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (next, entries) = &mut *guard;
        let of_peer = entries.values().filter(|e| e.peer == peer).count();
        let victim_peer = if of_peer >= self.limits.per_peer {
            Some(peer)
        } else if entries.len() >= self.limits.total {
            // the address holding the most pending connections (ties: the one whose oldest is oldest)
            let mut counts: Vec<(IpAddr, usize, u64)> = Vec::new();
            for (id, e) in entries.iter() {
                match counts.iter_mut().find(|(p, _, _)| *p == e.peer) {
                    Some(c) => c.1 += 1,
                    None => counts.push((e.peer, 1, *id)),
                }
            }
            counts
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
                .map(|(p, _, _)| p)
        } else {
            None
        };
        let eviction = victim_peer.and_then(|vp| {
            let id = entries
                .iter()
                .find(|(_, e)| e.peer == vp)
                .map(|(id, _)| *id)?;
            let e = entries.remove(&id)?;
            let _ = e.evict.send(());
            Some(Eviction { peer: vp })
        });
        let (tx, rx) = oneshot::channel();
        let id = *next;
        *next += 1;
        entries.insert(id, Entry { peer, evict: tx });
        (
            Ticket {
                id,
                set: self.clone(),
                evicted: rx,
            },
            eviction,
        )
    }

    /// Pending connections now.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// Resolves when a newer connection evicted this one.
    pub async fn evicted(&mut self) {
        // the sender is only dropped or used when the entry leaves the set by eviction
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut guard = self.set.entries.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn per_peer_bound_evicts_that_peers_oldest() {
        let set = PendingSet::new(PendingLimits {
            total: 10,
            per_peer: 2,
        });
        let (mut a1, e) = set.admit(ip("10.0.0.1"));
        assert_eq!(e, None);
        let (_a2, _) = set.admit(ip("10.0.0.1"));
        let (_b1, _) = set.admit(ip("10.0.0.2"));
        let (_a3, e) = set.admit(ip("10.0.0.1"));
        assert_eq!(
            e,
            Some(Eviction {
                peer: ip("10.0.0.1")
            })
        );
        tokio::time::timeout(Duration::from_secs(1), a1.evicted())
            .await
            .expect("oldest of the peer evicted");
        assert_eq!(set.len(), 3);
    }

    #[tokio::test]
    async fn total_bound_evicts_from_the_biggest_holder() {
        let set = PendingSet::new(PendingLimits {
            total: 4,
            per_peer: 4,
        });
        let (mut quiet, _) = set.admit(ip("10.0.0.9"));
        let mut flood = Vec::new();
        for _ in 0..3 {
            flood.push(set.admit(ip("10.0.0.1")).0);
        }
        // full: a newcomer evicts the flood's oldest, never the quiet peer's connection
        for _ in 0..20 {
            let (t, e) = set.admit(ip("10.0.0.5"));
            assert_ne!(e.map(|e| e.peer), Some(ip("10.0.0.9")));
            drop(t);
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), quiet.evicted())
                .await
                .is_err(),
            "the quiet peer's connection stays"
        );
        let mut first = flood.remove(0);
        tokio::time::timeout(Duration::from_secs(1), first.evicted())
            .await
            .expect("the flood's oldest went");
    }

    #[test]
    fn dropping_a_ticket_frees_its_place() {
        let set = PendingSet::new(PendingLimits {
            total: 2,
            per_peer: 2,
        });
        let (t, _) = set.admit(ip("::1"));
        assert_eq!(set.len(), 1);
        drop(t);
        assert!(set.is_empty());
    }
}
