//! `/metrics` in the Prometheus text format, on a tiny HTTP listener.

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::Stats;
use crate::xdp::{Counter, FastPathCounters};

/// Longest request head read before giving up.
const MAX_REQUEST: usize = 8192;

/// What /metrics reports.
pub struct MetricsSource {
    pub stats: Arc<Stats>,
    /// `None` when the fast path is off or failed to attach.
    pub fast_path: Option<FastPathCounters>,
}

impl MetricsSource {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let g = Stats::get;
        let _ = writeln!(
            out,
            "# HELP keyhole_relay_userspace_datagrams_total Datagrams read by userspace.\n\
             # TYPE keyhole_relay_userspace_datagrams_total counter\n\
             keyhole_relay_userspace_datagrams_total{{source=\"client\"}} {}\n\
             keyhole_relay_userspace_datagrams_total{{source=\"client_channel_data\"}} {}\n\
             keyhole_relay_userspace_datagrams_total{{source=\"peer\"}} {}",
            g(&s.client_datagrams),
            g(&s.client_channel_data),
            g(&s.peer_datagrams),
        );
        let _ = writeln!(
            out,
            "# HELP keyhole_relay_userspace_relayed_packets_total Data packets relayed by userspace.\n\
             # TYPE keyhole_relay_userspace_relayed_packets_total counter\n\
             keyhole_relay_userspace_relayed_packets_total{{direction=\"to_peer\"}} {}\n\
             keyhole_relay_userspace_relayed_packets_total{{direction=\"to_client\"}} {}\n\
             # HELP keyhole_relay_userspace_relayed_bytes_total Application bytes relayed by userspace.\n\
             # TYPE keyhole_relay_userspace_relayed_bytes_total counter\n\
             keyhole_relay_userspace_relayed_bytes_total{{direction=\"to_peer\"}} {}\n\
             keyhole_relay_userspace_relayed_bytes_total{{direction=\"to_client\"}} {}",
            g(&s.to_peer_packets),
            g(&s.to_client_packets),
            g(&s.to_peer_bytes),
            g(&s.to_client_bytes),
        );
        let _ = writeln!(
            out,
            "# TYPE keyhole_relay_allocations gauge\nkeyhole_relay_allocations {}\n\
             # TYPE keyhole_relay_xdp_channels gauge\nkeyhole_relay_xdp_channels {}\n\
             # TYPE keyhole_relay_xdp_map_errors_total counter\nkeyhole_relay_xdp_map_errors_total {}",
            g(&s.allocations),
            g(&s.xdp_channels),
            g(&s.xdp_map_errors),
        );
        let counters = self.fast_path.as_ref().map(FastPathCounters::read);
        let attached = matches!(counters, Some(Ok(_)));
        let _ = writeln!(
            out,
            "# HELP keyhole_relay_xdp_attached Whether the XDP fast path is attached.\n\
             # TYPE keyhole_relay_xdp_attached gauge\nkeyhole_relay_xdp_attached {}",
            u8::from(attached)
        );
        if let Some(Ok(c)) = counters {
            let v = |k: Counter| c[k as usize];
            let _ = writeln!(
                out,
                "# HELP keyhole_relay_xdp_packets_total Packets relayed by the XDP fast path.\n\
                 # TYPE keyhole_relay_xdp_packets_total counter\n\
                 keyhole_relay_xdp_packets_total{{direction=\"to_peer\"}} {}\n\
                 keyhole_relay_xdp_packets_total{{direction=\"to_client\"}} {}\n\
                 # HELP keyhole_relay_xdp_bytes_total Application bytes relayed by the XDP fast path.\n\
                 # TYPE keyhole_relay_xdp_bytes_total counter\n\
                 keyhole_relay_xdp_bytes_total{{direction=\"to_peer\"}} {}\n\
                 keyhole_relay_xdp_bytes_total{{direction=\"to_client\"}} {}\n\
                 # TYPE keyhole_relay_xdp_sent_total counter\n\
                 keyhole_relay_xdp_sent_total{{how=\"tx\"}} {}\n\
                 keyhole_relay_xdp_sent_total{{how=\"redirect\"}} {}\n\
                 # HELP keyhole_relay_xdp_passed_total Packets the fast path left to the kernel stack, by reason.\n\
                 # TYPE keyhole_relay_xdp_passed_total counter",
                v(Counter::ToPeerPackets),
                v(Counter::ToClientPackets),
                v(Counter::ToPeerBytes),
                v(Counter::ToClientBytes),
                v(Counter::Tx),
                v(Counter::Redirected),
            );
            for k in Counter::ALL.iter().filter(|k| k.is_pass()) {
                let _ = writeln!(
                    out,
                    "keyhole_relay_xdp_passed_total{{reason=\"{}\"}} {}",
                    k.name(),
                    v(*k)
                );
            }
        }
        out
    }
}

/// Serves `GET /metrics` until the listener fails.
pub async fn serve(listener: TcpListener, source: Arc<MetricsSource>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(respond(stream, source.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
        }
    }
}

async fn respond(mut stream: TcpStream, source: Arc<MetricsSource>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            // Counter reads are syscalls; keep them off the async workers.
            let src = source.clone();
            let body = tokio::task::spawn_blocking(move || src.render())
                .await
                .unwrap_or_default();
            ("200 OK", body)
        }
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_userspace_counters_without_fast_path() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.to_peer_packets, 3);
        Stats::add(&stats.to_peer_bytes, 300);
        let src = MetricsSource {
            stats,
            fast_path: None,
        };
        let text = src.render();
        assert!(
            text.contains(
                "keyhole_relay_userspace_relayed_packets_total{direction=\"to_peer\"} 3\n"
            )
        );
        assert!(
            text.contains(
                "keyhole_relay_userspace_relayed_bytes_total{direction=\"to_peer\"} 300\n"
            )
        );
        assert!(text.contains("keyhole_relay_xdp_attached 0\n"));
        assert!(!text.contains("keyhole_relay_xdp_packets_total"));
    }
}
