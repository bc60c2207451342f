//! The process's counters (associations, instances, jobs, deliveries) and their Prometheus text
//! exposition (the `prometheus` crate's registry and text encoder), with the shared database's state
//! counts as gauges.
//!
//! Counters are per process (each receiver and worker exposes its own, as Prometheus expects) and carry
//! the process's `node` label, added when they are exposed (the name is known only once the settings are
//! read, the counters exist from the first association on). The series / jobs / outbox gauges come from
//! the database, so every process of a deployment shows the same totals; they have no node label.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use prometheus::proto::{LabelPair, MetricFamily};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

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

/// The process's metrics, registered in a registry of their own.
pub struct Metrics {
    registry: Registry,
    associations: IntCounter,
    rejected: IntCounterVec,
    instances_stored: IntCounter,
    instances_refused: IntCounter,
    bytes_received: IntCounter,
    echoes: IntCounter,
    jobs_done: IntCounterVec,
    jobs_failed: IntCounterVec,
    job_seconds: prometheus::CounterVec,
    job_duration: HistogramVec,
    deliveries_sent: IntCounterVec,
    delivery_failures: IntCounterVec,
    handshakes_dropped: IntCounterVec,
    certificate_days: prometheus::GaugeVec,
    series_completed: IntCounterVec,
    completion_delay: HistogramVec,
    read_ahead_bytes: IntGauge,
    read_ahead_slices: IntCounterVec,
    /// The database gauges, set from the state counts at each exposition (under the lock, so two
    /// scrapes do not interleave).
    shared: Mutex<Shared>,
}

struct Shared {
    registry: Registry,
    index_up: IntGauge,
    tables: [(&'static str, IntGaugeVec); 3],
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let rejected = counter_vec(
            &r,
            "segnode_associations_rejected_total",
            "Associations turned away, by reason.",
            "reason",
        );
        for reason in ["refused", "limit", "index_unavailable"] {
            rejected.with_label_values(&[reason]);
        }
        let handshakes_dropped = counter_vec(
            &r,
            "segnode_connections_dropped_total",
            "Connections closed before a valid A-ASSOCIATE-RQ (they never held an association slot), by reason.",
            "reason",
        );
        for reason in ["evicted", "timed_out", "tls_failed"] {
            handshakes_dropped.with_label_values(&[reason]);
        }
        let certificate_days = prometheus::GaugeVec::new(
            Opts::new(
                "segnode_tls_certificate_expiry_days",
                "Days until a TLS certificate in use expires (negative: expired).",
            ),
            &["certificate"],
        )
        .expect("valid metric name");
        r.register(Box::new(certificate_days.clone()))
            .expect("registered once");
        let job_seconds = prometheus::CounterVec::new(
            Opts::new(
                "segnode_job_seconds_total",
                "Seconds spent in completed jobs.",
            ),
            &["pipeline"],
        )
        .expect("valid metric name");
        r.register(Box::new(job_seconds.clone()))
            .expect("registered once");
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "segnode_job_duration_seconds",
                "Duration of completed jobs.",
            )
            .buckets(vec![
                0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["pipeline"],
        )
        .expect("valid metric name");
        r.register(Box::new(job_duration.clone()))
            .expect("registered once");
        let series_completed = counter_vec(
            &r,
            "segnode_series_completed_total",
            "Series revisions this process marked COMPLETE, by the evidence: at_release, settled, \
             announced_count, quiet_period, forced.",
            "basis",
        );
        let completion_delay = HistogramVec::new(
            HistogramOpts::new(
                "segnode_completion_delay_seconds",
                "From the last instance of a series to its completion.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["basis"],
        )
        .expect("valid metric name");
        r.register(Box::new(completion_delay.clone()))
            .expect("registered once");
        let read_ahead_bytes = IntGauge::new(
            "segnode_read_ahead_bytes",
            "Memory held by slices decoded while their series arrive (workers.read_ahead_mb).",
        )
        .expect("valid metric name");
        r.register(Box::new(read_ahead_bytes.clone()))
            .expect("registered once");
        let read_ahead_slices = counter_vec(
            &r,
            "segnode_read_ahead_slices_total",
            "Slices of jobs' volumes: taken from the read-ahead (used) or read from disk at the load (read).",
            "source",
        );
        for basis in [
            "at_release",
            "settled",
            "announced_count",
            "quiet_period",
            "forced",
        ] {
            series_completed.with_label_values(&[basis]);
        }
        for source in ["used", "read"] {
            read_ahead_slices.with_label_values(&[source]);
        }
        let shared_registry = Registry::new();
        let index_up = IntGauge::new("segnode_index_up", "Whether the index database answered.")
            .expect("valid metric name");
        shared_registry
            .register(Box::new(index_up.clone()))
            .expect("registered once");
        let table = |name: &'static str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(format!("segnode_{name}"), help), &["state"])
                .expect("valid metric name");
            shared_registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            (name, g)
        };
        let tables = [
            table("series", "Series in the index, by state."),
            table("jobs", "Jobs in the queue, by state."),
            table("outbox", "Result deliveries, by state."),
        ];
        Metrics {
            associations: counter(&r, "segnode_associations_total", "Associations accepted."),
            rejected,
            instances_stored: counter(
                &r,
                "segnode_instances_stored_total",
                "Instances stored (success status sent).",
            ),
            instances_refused: counter(
                &r,
                "segnode_instances_refused_total",
                "Instances answered with a failure status.",
            ),
            bytes_received: counter(
                &r,
                "segnode_received_bytes_total",
                "Data set bytes received.",
            ),
            echoes: counter(&r, "segnode_echoes_total", "C-ECHO requests answered."),
            jobs_done: counter_vec(
                &r,
                "segnode_jobs_done_total",
                "Jobs this process completed.",
                "pipeline",
            ),
            jobs_failed: counter_vec(
                &r,
                "segnode_jobs_failed_total",
                "Job attempts of this process that failed.",
                "pipeline",
            ),
            job_seconds,
            job_duration,
            deliveries_sent: counter_vec(
                &r,
                "segnode_deliveries_sent_total",
                "Results acknowledged by a destination.",
                "destination",
            ),
            delivery_failures: counter_vec(
                &r,
                "segnode_delivery_failures_total",
                "Delivery attempts that failed.",
                "destination",
            ),
            handshakes_dropped,
            certificate_days,
            series_completed,
            completion_delay,
            read_ahead_bytes,
            read_ahead_slices,
            registry: r,
            shared: Mutex::new(Shared {
                registry: shared_registry,
                index_up,
                tables,
            }),
        }
    }
}

impl Metrics {
    pub fn association_accepted(&self) {
        self.associations.inc();
    }

    pub fn association_rejected(&self, why: Rejection) {
        let reason = match why {
            Rejection::Refused => "refused",
            Rejection::Limit => "limit",
            Rejection::IndexUnavailable => "index_unavailable",
        };
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// A connection that left the handshake phase without an association.
    pub fn handshake_dropped(&self, reason: &str) {
        self.handshakes_dropped.with_label_values(&[reason]).inc();
    }

    /// Days left on a TLS certificate in use.
    pub fn certificate_expiry(&self, certificate: &str, days: f64) {
        self.certificate_days
            .with_label_values(&[certificate])
            .set(days);
    }

    pub fn instance(&self, stored: bool) {
        if stored {
            self.instances_stored.inc();
        } else {
            self.instances_refused.inc();
        }
    }

    pub fn received(&self, bytes: u64) {
        self.bytes_received.inc_by(bytes);
    }

    pub fn echo(&self) {
        self.echoes.inc();
    }

    pub fn job(&self, pipeline: &str, done: bool, seconds: f64) {
        if done {
            self.jobs_done.with_label_values(&[pipeline]).inc();
            self.job_seconds
                .with_label_values(&[pipeline])
                .inc_by(seconds.max(0.0));
            self.job_duration
                .with_label_values(&[pipeline])
                .observe(seconds);
        } else {
            self.jobs_failed.with_label_values(&[pipeline]).inc();
        }
    }

    /// A series revision completed on `basis`, `delay_s` after its last instance.
    pub fn series_completed(&self, basis: &str, delay_s: f64) {
        self.series_completed.with_label_values(&[basis]).inc();
        self.completion_delay
            .with_label_values(&[basis])
            .observe(delay_s.max(0.0));
    }

    /// Memory the read-ahead holds now.
    pub fn read_ahead_held(&self, bytes: usize) {
        self.read_ahead_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A job's load: `used` slices from the read-ahead, `read` from disk.
    pub fn read_ahead_load(&self, used: usize, read: usize) {
        self.read_ahead_slices
            .with_label_values(&["used"])
            .inc_by(used as u64);
        self.read_ahead_slices
            .with_label_values(&["read"])
            .inc_by(read as u64);
    }

    pub fn delivery(&self, destination: &str, sent: bool) {
        if sent {
            self.deliveries_sent.with_label_values(&[destination]).inc();
        } else {
            self.delivery_failures
                .with_label_values(&[destination])
                .inc();
        }
    }

    /// Prometheus text format (0.0.4): the counters with `node` as a label, plus `states` (table →
    /// state → rows) from the database when it answered.
    pub fn render(
        &self,
        node: &str,
        states: Option<&BTreeMap<&'static str, BTreeMap<String, i64>>>,
    ) -> String {
        let mut families = self.registry.gather();
        for family in &mut families {
            for metric in family.mut_metric() {
                let mut labels = metric.take_label();
                let mut pair = LabelPair::default();
                pair.set_name("node".into());
                pair.set_value(node.into());
                labels.push(pair);
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                metric.set_label(labels);
            }
        }
        let shared: Vec<MetricFamily> = {
            let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            s.index_up.set(i64::from(states.is_some()));
            for (table, gauge) in &s.tables {
                gauge.reset();
                for (state, n) in states.and_then(|t| t.get(table)).into_iter().flatten() {
                    gauge.with_label_values(&[state.as_str()]).set(*n);
                }
            }
            s.registry.gather()
        };
        let mut index_up = shared;
        // index_up carries the node label too (which process's view of the database)
        for family in &mut index_up {
            if family.name() == "segnode_index_up" {
                for metric in family.mut_metric() {
                    let mut pair = LabelPair::default();
                    pair.set_name("node".into());
                    pair.set_value(node.into());
                    metric.set_label(vec![pair]);
                }
            }
        }
        families.extend(index_up);
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(error = %e, "metrics exposition failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
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
            "segnode_associations_rejected_total{node=\"rx\\\"1\",reason=\"refused\"} 0",
            "segnode_instances_stored_total{node=\"rx\\\"1\"} 1",
            "segnode_instances_refused_total{node=\"rx\\\"1\"} 1",
            "segnode_received_bytes_total{node=\"rx\\\"1\"} 107",
            "segnode_jobs_done_total{node=\"rx\\\"1\",pipeline=\"lung\"} 1",
            "segnode_jobs_failed_total{node=\"rx\\\"1\",pipeline=\"lung\"} 1",
            "segnode_job_seconds_total{node=\"rx\\\"1\",pipeline=\"lung\"} 1.5",
            "segnode_job_duration_seconds_count{node=\"rx\\\"1\",pipeline=\"lung\"} 1",
            "segnode_deliveries_sent_total{destination=\"pacs\",node=\"rx\\\"1\"} 1",
            "segnode_index_up{node=\"rx\\\"1\"} 1",
            "segnode_jobs{state=\"DONE\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        let down = m.render("n", None);
        assert!(
            down.lines().any(|l| l == "segnode_index_up{node=\"n\"} 0"),
            "{down}"
        );
        assert!(
            !down.contains("segnode_jobs{"),
            "stale gauges dropped:\n{down}"
        );
    }
}
