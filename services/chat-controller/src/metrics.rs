//! The controller's own Prometheus metrics.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::conditions as ct;
use crate::crd::ChatBackend;
use crate::error::Error;

pub const RECONCILIATIONS_TOTAL: &str = "chat_controller_reconciliations_total";
pub const RECONCILE_ERRORS_TOTAL: &str = "chat_controller_reconcile_errors_total";
pub const RECONCILE_DURATION_SECONDS: &str = "chat_controller_reconcile_duration_seconds";
pub const CHATBACKENDS: &str = "chat_controller_chatbackends";
pub const LEADER: &str = "chat_controller_leader";
pub const LABEL_REASON: &str = "reason";
pub const LABEL_READY: &str = "ready";

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: IntCounter,
    pub errors: IntCounterVec,
    pub duration: Histogram,
    pub backends: IntGaugeVec,
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations =
            IntCounter::new(RECONCILIATIONS_TOTAL, "ChatBackend reconciliations started").expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(RECONCILE_ERRORS_TOTAL, "Failed ChatBackend reconciliations by reason"),
            &[LABEL_REASON],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(RECONCILE_DURATION_SECONDS, "Duration of ChatBackend reconciliations")
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let backends = IntGaugeVec::new(
            Opts::new(CHATBACKENDS, "ChatBackends by the status of their Ready condition"),
            &[LABEL_READY],
        )
        .expect("valid metric");
        let leader = IntGauge::new(LEADER, "1 when this replica holds the leader Lease").expect("valid metric");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(backends.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self { registry, reconciliations, errors, duration, backends, leader }
    }

    /// Counts a reconciliation; the returned guard observes its duration on drop.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer { start: Instant::now(), histogram: self.duration.clone() }
    }

    pub fn reconcile_failed(&self, e: &Error) {
        self.errors.with_label_values(&[e.metric_reason()]).inc();
    }

    /// Sets the ChatBackends-by-Ready gauge from the current objects.
    pub fn set_backends<'a>(&self, backends: impl IntoIterator<Item = &'a ChatBackend>) {
        let (mut t, mut f, mut u) = (0, 0, 0);
        for cb in backends {
            let ready = cb
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == ct::READY))
                .map(|c| c.status.clone());
            match ready.as_deref() {
                Some(ct::TRUE) => t += 1,
                Some(ct::FALSE) => f += 1,
                _ => u += 1,
            }
        }
        self.backends.with_label_values(&["true"]).set(t);
        self.backends.with_label_values(&["false"]).set(f);
        self.backends.with_label_values(&["unknown"]).set(u);
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_metrics() {
        let m = Metrics::new();
        drop(m.reconcile_started());
        m.reconcile_failed(&Error::MissingObjectKey("x"));
        m.set_backends([]);
        let text = m.render();
        for name in [RECONCILIATIONS_TOTAL, RECONCILE_ERRORS_TOTAL, RECONCILE_DURATION_SECONDS, CHATBACKENDS, LEADER] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("reason=\"missing_key\""));
    }
}
