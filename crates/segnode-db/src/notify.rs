//! Notifications (wake-ups): "there may be work" signals between the parts of segnode, within a
//! process and — on PostgreSQL — between processes and machines. Here because the cross-process half
//! is the database's LISTEN / NOTIFY, sent inside the transaction that made the change.
//!
//! Three topics: new or requeued jobs (workers), queued deliveries (dispatchers), completed series
//! (routers). Inside a process a topic is a counter in a `watch` channel: a waiter marks what it has
//! seen before it looks for work ([`Waiter::arm`]) and then waits for a newer value, so a ring that falls
//! between the look and the wait is never lost. On PostgreSQL every change that rings a topic also sends
//! `NOTIFY segnode_<topic>` in its transaction (delivered at commit), and one `LISTEN` connection per
//! process ([`spawn_pg_listener`]) rings the local topics. Polling stays as the fallback: a wake-up is
//! a hint to look now, never the only way work is found.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::options::Backend;

/// What a wake-up is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Jobs were created or requeued.
    Jobs = 0,
    /// Deliveries were queued.
    Outbox = 1,
    /// A series completed.
    Series = 2,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Jobs, Topic::Outbox, Topic::Series];

    /// The PostgreSQL channel of the topic.
    pub fn channel(self) -> &'static str {
        match self {
            Topic::Jobs => "segnode_jobs",
            Topic::Outbox => "segnode_outbox",
            Topic::Series => "segnode_series",
        }
    }

    /// The statement that notifies the topic's channel (constant text, no parameters).
    pub fn notify_sql(self) -> &'static str {
        match self {
            Topic::Jobs => "NOTIFY segnode_jobs",
            Topic::Outbox => "NOTIFY segnode_outbox",
            Topic::Series => "NOTIFY segnode_series",
        }
    }

    pub fn from_channel(channel: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.channel() == channel)
    }
}

/// The topics of one process.
#[derive(Debug)]
pub struct Wakeups {
    topics: [watch::Sender<u64>; 3],
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            topics: std::array::from_fn(|_| watch::channel(0u64).0),
        }
    }
}

impl Wakeups {
    /// Wake every waiter of `topic` (those waiting now and those that armed before it).
    pub fn ring(&self, topic: Topic) {
        self.topics[topic as usize].send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn ring_all(&self) {
        for t in Topic::ALL {
            self.ring(t);
        }
    }

    pub fn subscribe(&self, topic: Topic) -> Waiter {
        Waiter {
            rx: self.topics[topic as usize].subscribe(),
        }
    }
}

/// One waiter of a topic.
#[derive(Debug)]
pub struct Waiter {
    rx: watch::Receiver<u64>,
}

impl Waiter {
    /// Mark every ring so far as seen: call before looking for work.
    pub fn arm(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Wait until the topic rings after the last [`arm`](Self::arm) (true), or `timeout` passes (false).
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, self.rx.changed()).await {
            Ok(Ok(())) => true,
            Err(_) => false,
            // the sender is gone (the process is stopping): do not spin
            Ok(Err(_)) => {
                tokio::time::sleep(timeout).await;
                false
            }
        }
    }
}

/// Listen on the PostgreSQL channels of every topic and ring the local topics; reconnects with backoff
/// and rings everything after each (re)connection (notifications sent meanwhile were lost).
pub fn spawn_pg_listener(url: String, wakeups: Arc<Wakeups>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let channels: Vec<&str> = Topic::ALL.iter().map(|t| t.channel()).collect();
        let mut backoff = Duration::from_millis(200);
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut listener) => match listener.listen_all(channels.iter().copied()).await {
                    Ok(()) => {
                        tracing::debug!("listening for wake-ups on PostgreSQL");
                        backoff = Duration::from_millis(200);
                        wakeups.ring_all();
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => {
                                    if let Some(t) = Topic::from_channel(n.channel()) {
                                        wakeups.ring(t);
                                    }
                                }
                                // connection lost: the next try_recv reconnects and listens again
                                Ok(None) => {
                                    tracing::warn!("wake-up connection lost; reconnecting");
                                    wakeups.ring_all();
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "wake-up listener failed; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot LISTEN for wake-ups"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot connect the wake-up listener"),
            }
            // polling covers the gap
            wakeups.ring_all();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

/// Queue a wake-up of `topic` for the other processes, sent when `tx` commits (PostgreSQL; nothing on
/// SQLite). The caller rings the local topic after the commit.
pub(crate) async fn notify_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    topic: Topic,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query(topic.notify_sql()).execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ring_between_arm_and_wait_is_not_lost() {
        let w = Wakeups::default();
        let mut waiter = w.subscribe(Topic::Jobs);
        waiter.arm();
        w.ring(Topic::Jobs);
        assert!(
            waiter.wait(Duration::from_secs(30)).await,
            "woken by the ring"
        );
        // seen now: the next wait times out
        waiter.arm();
        assert!(!waiter.wait(Duration::from_millis(50)).await);
        // other topics do not wake it
        waiter.arm();
        w.ring(Topic::Outbox);
        assert!(!waiter.wait(Duration::from_millis(50)).await);
    }
}
