//! Per-source-IP token buckets for unauthenticated requests, so a flood
//! neither costs much CPU nor turns the relay into a reflector.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::config::RateLimit;

/// Beyond this many tracked sources new ones are refused until idle ones
/// are swept, bounding memory under a spoofed-source flood.
const MAX_SOURCES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        b.last = now;
    }

    /// Takes one token from `ip`'s bucket; false when the bucket is empty.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let full = Bucket {
            tokens: f64::from(self.limit.burst),
            last: now,
        };
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_SOURCES {
            return false;
        }
        let mut b = *self.buckets.get(&ip).unwrap_or(&full);
        self.refill(&mut b, now);
        let ok = b.tokens >= 1.0;
        if ok {
            b.tokens -= 1.0;
        }
        self.buckets.insert(ip, b);
        ok
    }

    /// Forgets buckets that have refilled completely.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let limit = self.limit;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * limit.per_second < f64::from(limit.burst)
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}
