//! Reading a relay's Prometheus `/metrics` from inside its namespace.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// One scrape: `name{labels}` (as printed) → value.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// GET `http://addr/metrics` from inside `ns`.
    pub fn scrape(ns: &Netns, addr: SocketAddr) -> Result<Metrics> {
        let text = ns.enter(|| fetch(addr))?;
        Ok(Metrics::parse(&text))
    }

    /// Parses Prometheus text: comments and unparsable lines are skipped.
    pub fn parse(text: &str) -> Metrics {
        let map = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        Metrics(map)
    }

    /// The sample `name` exactly as printed (labels included), 0 if absent.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Sum over every sample of metric `family` (any labels).
    pub fn sum(&self, family: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.as_str() == family || k.strip_prefix(family).is_some_and(|r| r.starts_with('{'))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn fetch(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to metrics at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics at {addr}: {head}");
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_family_across_labels_only() {
        let m = Metrics::parse(
            "# HELP x\n\
             keyhole_relay_xdp_packets_total{direction=\"to_peer\"} 3\n\
             keyhole_relay_xdp_packets_total{direction=\"to_client\"} 4\n\
             keyhole_relay_xdp_packets_total_other 100\n\
             keyhole_relay_allocations 2\n\
             garbage\n",
        );
        assert_eq!(m.sum("keyhole_relay_xdp_packets_total"), 7.0);
        assert_eq!(m.sum("keyhole_relay_allocations"), 2.0);
        assert_eq!(m.get("keyhole_relay_allocations"), 2.0);
        assert_eq!(m.get("missing"), 0.0);
    }
}
