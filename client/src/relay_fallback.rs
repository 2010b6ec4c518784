//! TURN over TCP when UDP to a relay gets nowhere (networks that let only
//! TCP out): a relay added over UDP that has no allocation after
//! [`AFTER`] is switched to TCP. Sans-IO: the caller reports what the
//! tunnel's node says and performs the switch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a UDP allocation may take before the relay is tried over TCP.
/// An allocation answers within a round trip; by then the TURN client has
/// sent its Allocate three times (RTO 500 ms, doubling).
pub const AFTER: Duration = Duration::from_secs(3);

/// UDP relays whose first allocation is still outstanding.
#[derive(Debug, Default)]
pub struct TcpFallback {
    waiting: HashMap<SocketAddr, Instant>,
}

impl TcpFallback {
    /// A relay at `server` was added over UDP at `now`.
    pub fn added(&mut self, server: SocketAddr, now: Instant) {
        self.waiting.insert(server, now);
    }

    /// The relay at `server` is no longer used.
    pub fn removed(&mut self, server: SocketAddr) {
        self.waiting.remove(&server);
    }

    /// Whether anything is being watched (the caller asks the node only then).
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Given whether each watched relay is allocated, the relays to switch
    /// to TCP now. Allocated ones and the returned ones are no longer
    /// watched; UDP that once worked is never abandoned here.
    pub fn due(&mut self, now: Instant, allocated: impl Fn(SocketAddr) -> bool) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        self.waiting.retain(|server, since| {
            if allocated(*server) {
                return false;
            }
            if now.saturating_duration_since(*since) >= AFTER {
                out.push(*server);
                return false;
            }
            true
        });
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unallocated_relay_switches_to_tcp_after_the_timeout_once() {
        let t0 = Instant::now();
        let mut f = TcpFallback::default();
        f.added(addr("198.18.2.2:3478"), t0);
        assert!(
            f.due(t0 + AFTER - Duration::from_millis(1), |_| false)
                .is_empty()
        );
        assert!(f.is_waiting());
        assert_eq!(f.due(t0 + AFTER, |_| false), vec![addr("198.18.2.2:3478")]);
        assert!(!f.is_waiting());
        assert!(f.due(t0 + AFTER * 10, |_| false).is_empty());
    }

    #[test]
    fn allocated_relay_stays_on_udp() {
        let t0 = Instant::now();
        let mut f = TcpFallback::default();
        f.added(addr("198.18.2.2:3478"), t0);
        f.added(addr("198.18.9.2:3478"), t0);
        let ok = addr("198.18.2.2:3478");
        assert!(
            f.due(t0 + Duration::from_millis(20), |s| s == ok)
                .is_empty()
        );
        assert_eq!(
            f.due(t0 + AFTER, |s| s == ok),
            vec![addr("198.18.9.2:3478")]
        );
        assert!(!f.is_waiting());
    }

    #[test]
    fn removed_relay_is_forgotten() {
        let t0 = Instant::now();
        let mut f = TcpFallback::default();
        f.added(addr("198.18.2.2:3478"), t0);
        f.removed(addr("198.18.2.2:3478"));
        assert!(!f.is_waiting());
        assert!(f.due(t0 + AFTER, |_| false).is_empty());
    }
}
