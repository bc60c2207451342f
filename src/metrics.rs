//! The process's counters (associations, instances, jobs, deliveries) and their Prometheus text
//! exposition, with the shared database's state counts as gauges.
//!
//! Counters are per process (each receiver and worker exposes its own, as Prometheus expects); the
//! series / jobs / outbox gauges come from the database, so every process of a deployment shows the
//! same totals.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why an association was turned away.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// Calling / called AE title not allowed, or a malformed request.
    Refused,
    /// `dicom.max_associations` reached.
    Limit,
    /// The index database did not answer.
    IndexUnavailable,
}

#[derive(Default)]
pub struct Metrics {
    associations: AtomicU64,
    rejected_refused: AtomicU64,
    rejected_limit: AtomicU64,
    rejected_index: AtomicU64,
    instances_stored: AtomicU64,
    instances_refused: AtomicU64,
    bytes_received: AtomicU64,
    echoes: AtomicU64,
    /// pipeline → (done, failed, seconds of the done ones)
    jobs: Mutex<BTreeMap<String, (u64, u64, f64)>>,
    /// destination → (sent, failed attempts)
    deliveries: Mutex<BTreeMap<String, (u64, u64)>>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

impl Metrics {
    pub fn association_accepted(&self) {
        self.associations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn association_rejected(&self, why: Rejection) {
        match why {
            Rejection::Refused => &self.rejected_refused,
            Rejection::Limit => &self.rejected_limit,
            Rejection::IndexUnavailable => &self.rejected_index,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn instance(&self, stored: bool) {
        if stored {
            self.instances_stored.fetch_add(1, Ordering::Relaxed);
        } else {
            self.instances_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn echo(&self) {
        self.echoes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn job(&self, pipeline: &str, done: bool, seconds: f64) {
        if let Ok(mut m) = self.jobs.lock() {
            let e = m.entry(pipeline.to_string()).or_default();
            if done {
                e.0 += 1;
                e.2 += seconds;
            } else {
                e.1 += 1;
            }
        }
    }

    pub fn delivery(&self, destination: &str, sent: bool) {
        if let Ok(mut m) = self.deliveries.lock() {
            let e = m.entry(destination.to_string()).or_default();
            if sent {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }

    /// Prometheus text format (0.0.4): the counters, plus `states` (table → state → rows) from the
    /// database when it answered.
    pub fn render(
        &self,
        node: &str,
        states: Option<&BTreeMap<&'static str, BTreeMap<String, i64>>>,
    ) -> String {
        let mut out = String::new();
        let node = escape(node);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP segnode_{name} {help}");
            let _ = writeln!(out, "# TYPE segnode_{name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "segnode_{name}{{node=\"{node}\"{labels}}} {v}");
            }
        };
        counter(
            "associations_total",
            "Associations accepted.",
            &[(String::new(), get(&self.associations))],
        );
        counter(
            "associations_rejected_total",
            "Associations turned away, by reason.",
            &[
                (",reason=\"refused\"".into(), get(&self.rejected_refused)),
                (",reason=\"limit\"".into(), get(&self.rejected_limit)),
                (
                    ",reason=\"index_unavailable\"".into(),
                    get(&self.rejected_index),
                ),
            ],
        );
        counter(
            "instances_stored_total",
            "Instances stored (success status sent).",
            &[(String::new(), get(&self.instances_stored))],
        );
        counter(
            "instances_refused_total",
            "Instances answered with a failure status.",
            &[(String::new(), get(&self.instances_refused))],
        );
        counter(
            "received_bytes_total",
            "Data set bytes received.",
            &[(String::new(), get(&self.bytes_received))],
        );
        counter(
            "echoes_total",
            "C-ECHO requests answered.",
            &[(String::new(), get(&self.echoes))],
        );
        let jobs = self.jobs.lock().map(|m| m.clone()).unwrap_or_default();
        let per = |f: fn(&(u64, u64, f64)) -> u64| -> Vec<(String, u64)> {
            jobs.iter()
                .map(|(p, v)| (format!(",pipeline=\"{}\"", escape(p)), f(v)))
                .collect()
        };
        counter(
            "jobs_done_total",
            "Jobs this process completed.",
            &per(|v| v.0),
        );
        counter(
            "jobs_failed_total",
            "Job attempts of this process that failed.",
            &per(|v| v.1),
        );
        let _ = writeln!(
            out,
            "# HELP segnode_job_seconds_total Seconds spent in completed jobs."
        );
        let _ = writeln!(out, "# TYPE segnode_job_seconds_total counter");
        for (p, v) in &jobs {
            let _ = writeln!(
                out,
                "segnode_job_seconds_total{{node=\"{node}\",pipeline=\"{}\"}} {:.3}",
                escape(p),
                v.2
            );
        }
        let deliveries = self
            .deliveries
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut counter = |name: &str, help: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP segnode_{name} {help}");
            let _ = writeln!(out, "# TYPE segnode_{name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "segnode_{name}{{node=\"{node}\"{labels}}} {v}");
            }
        };
        counter(
            "deliveries_sent_total",
            "Results acknowledged by a destination.",
            deliveries
                .iter()
                .map(|(d, v)| (format!(",destination=\"{}\"", escape(d)), v.0))
                .collect(),
        );
        counter(
            "delivery_failures_total",
            "Delivery attempts that failed.",
            deliveries
                .iter()
                .map(|(d, v)| (format!(",destination=\"{}\"", escape(d)), v.1))
                .collect(),
        );
        let _ = writeln!(
            out,
            "# HELP segnode_index_up Whether the index database answered."
        );
        let _ = writeln!(out, "# TYPE segnode_index_up gauge");
        let _ = writeln!(
            out,
            "segnode_index_up{{node=\"{node}\"}} {}",
            u8::from(states.is_some())
        );
        if let Some(states) = states {
            for (table, help) in [
                ("series", "Series in the index, by state."),
                ("jobs", "Jobs in the queue, by state."),
                ("outbox", "Result deliveries, by state."),
            ] {
                let _ = writeln!(out, "# HELP segnode_{table} {help}");
                let _ = writeln!(out, "# TYPE segnode_{table} gauge");
                for (state, n) in states.get(table).into_iter().flatten() {
                    let _ = writeln!(out, "segnode_{table}{{state=\"{}\"}} {n}", escape(state));
                }
            }
        }
        out
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_exposition() {
        let m = Metrics::default();
        m.association_accepted();
        m.association_rejected(Rejection::Limit);
        m.instance(true);
        m.instance(false);
        m.received(107);
        m.job("lung", true, 1.5);
        m.job("lung", false, 0.0);
        m.delivery("pacs", true);
        let mut states = BTreeMap::new();
        states.insert("jobs", BTreeMap::from([("DONE".to_string(), 3i64)]));
        let text = m.render("rx\"1", Some(&states));
        for line in [
            "segnode_associations_total{node=\"rx\\\"1\"} 1",
            "segnode_associations_rejected_total{node=\"rx\\\"1\",reason=\"limit\"} 1",
            "segnode_instances_stored_total{node=\"rx\\\"1\"} 1",
            "segnode_instances_refused_total{node=\"rx\\\"1\"} 1",
            "segnode_received_bytes_total{node=\"rx\\\"1\"} 107",
            "segnode_jobs_done_total{node=\"rx\\\"1\",pipeline=\"lung\"} 1",
            "segnode_jobs_failed_total{node=\"rx\\\"1\",pipeline=\"lung\"} 1",
            "segnode_job_seconds_total{node=\"rx\\\"1\",pipeline=\"lung\"} 1.500",
            "segnode_deliveries_sent_total{node=\"rx\\\"1\",destination=\"pacs\"} 1",
            "segnode_index_up{node=\"rx\\\"1\"} 1",
            "segnode_jobs{state=\"DONE\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(m
            .render("n", None)
            .lines()
            .any(|l| l == "segnode_index_up{node=\"n\"} 0"));
    }
}
