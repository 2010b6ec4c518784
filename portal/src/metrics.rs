//! Prometheus metrics of the control plane, rendered in the text exposition
//! format at `/metrics`. Plain atomics: the hot path only does relaxed
//! increments, no registry lookups.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

/// Upper bounds (seconds) of the authorisation latency histogram.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe_micros(&self, micros: u64) {
        let secs = micros as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric the portal exports.
#[derive(Default)]
pub struct Metrics {
    pub gateways_connected: AtomicU64,
    pub clients_connected: AtomicU64,
    pub relays_connected: AtomicU64,
    pub flows_authorized: AtomicU64,
    pub flows_denied: AtomicU64,
    pub flows_failed_no_gateway: AtomicU64,
    pub flows_failed_gateway_timeout: AtomicU64,
    pub flows_failed_resource_gone: AtomicU64,
    pub flows_revoked: AtomicU64,
    pub flows_expired: AtomicU64,
    pub flows_resent: AtomicU64,
    pub flows_revoked_client_gone: AtomicU64,
    pub flows_dropped_gateway_offline: AtomicU64,
    pub gateways_silent_closed: AtomicU64,
    pub ws_ping_timeouts: AtomicU64,
    pub authorization_latency: Histogram,
    pub ws_frames_received: AtomicU64,
    pub ws_frames_sent: AtomicU64,
    pub ws_frames_unknown: AtomicU64,
    pub ws_frames_invalid: AtomicU64,
    pub ws_slow_consumers_closed: AtomicU64,
    pub flow_log_written: AtomicU64,
    pub flow_log_dropped: AtomicU64,
    pub snapshot_reloads: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn dec(gauge: &AtomicU64) {
        // Saturating: a gauge never wraps below zero.
        let _ = gauge.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        };
        gauge(
            &mut out,
            "keyhole_gateways_connected",
            "Gateways with an open control connection.",
            &self.gateways_connected,
        );
        gauge(
            &mut out,
            "keyhole_clients_connected",
            "Clients with an open control connection.",
            &self.clients_connected,
        );
        gauge(
            &mut out,
            "keyhole_relays_connected",
            "Registered relays with an open control connection.",
            &self.relays_connected,
        );
        let _ = writeln!(
            out,
            "# HELP keyhole_flows_total Flow requests by outcome.\n# TYPE keyhole_flows_total counter"
        );
        for (outcome, v) in [
            ("authorized", &self.flows_authorized),
            ("not_allowed", &self.flows_denied),
            ("no_gateway_online", &self.flows_failed_no_gateway),
            ("gateway_timeout", &self.flows_failed_gateway_timeout),
            ("resource_gone", &self.flows_failed_resource_gone),
        ] {
            let _ = writeln!(
                out,
                "keyhole_flows_total{{outcome=\"{outcome}\"}} {}",
                v.load(Relaxed)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut out,
            "keyhole_flows_revoked_total",
            "Live authorisations withdrawn by a change.",
            &self.flows_revoked,
        );
        counter(
            &mut out,
            "keyhole_flows_expired_total",
            "Live authorisations that reached their expiry.",
            &self.flows_expired,
        );
        counter(
            &mut out,
            "keyhole_flows_resent_total",
            "Flows asked again of a gateway that reconnected.",
            &self.flows_resent,
        );
        counter(
            &mut out,
            "keyhole_flows_revoked_client_gone_total",
            "Live authorisations revoked because their client stayed away past the grace period.",
            &self.flows_revoked_client_gone,
        );
        counter(
            &mut out,
            "keyhole_flows_dropped_gateway_offline_total",
            "Live flows dropped because their gateway stayed disconnected past the grace period (clients are told to move).",
            &self.flows_dropped_gateway_offline,
        );
        counter(
            &mut out,
            "keyhole_gateways_silent_closed_total",
            "Gateway connections closed for missed heartbeats.",
            &self.gateways_silent_closed,
        );
        counter(
            &mut out,
            "keyhole_ws_ping_timeouts_total",
            "Control connections closed because the peer stopped answering pings.",
            &self.ws_ping_timeouts,
        );
        self.authorization_latency.render(
            &mut out,
            "keyhole_authorization_latency_seconds",
            "From request_flow received to flow_created sent.",
        );
        let _ = writeln!(
            out,
            "# HELP keyhole_ws_frames_total WebSocket control frames.\n# TYPE keyhole_ws_frames_total counter"
        );
        for (kind, v) in [
            ("received", &self.ws_frames_received),
            ("sent", &self.ws_frames_sent),
            ("unknown_type", &self.ws_frames_unknown),
            ("invalid", &self.ws_frames_invalid),
        ] {
            let _ = writeln!(
                out,
                "keyhole_ws_frames_total{{kind=\"{kind}\"}} {}",
                v.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "keyhole_ws_slow_consumers_closed_total",
            "Connections closed because their send queue was full.",
            &self.ws_slow_consumers_closed,
        );
        counter(
            &mut out,
            "keyhole_flow_log_written_total",
            "Flow log entries stored.",
            &self.flow_log_written,
        );
        counter(
            &mut out,
            "keyhole_flow_log_dropped_total",
            "Flow log entries lost (writer queue full or database error).",
            &self.flow_log_dropped,
        );
        counter(
            &mut out,
            "keyhole_snapshot_reloads_total",
            "Policy snapshot reloads after changes.",
            &self.snapshot_reloads,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.authorization_latency.observe_micros(300);
        m.authorization_latency.observe_micros(2_000);
        m.authorization_latency.observe_micros(60_000_000);
        Metrics::inc(&m.flows_authorized);
        Metrics::dec(&m.clients_connected);
        let text = m.render();
        assert!(text.contains("keyhole_authorization_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("keyhole_authorization_latency_seconds_bucket{le=\"0.0025\"} 2"));
        assert!(text.contains("keyhole_authorization_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("keyhole_flows_total{outcome=\"authorized\"} 1"));
        assert!(text.contains("keyhole_clients_connected 0"));
    }
}
