//! Sliding-window counters of failed sign-ins, per key (an account or a
//! client IP). In memory: a restart forgets them, which only gives an
//! attacker one more window per restart.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// Beyond this many keys, idle ones are dropped first (memory bound
/// against floods of distinct e-mails or addresses).
const MAX_KEYS: usize = 100_000;

pub struct Limiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while `key` has used up its failures in the window.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock();
        let Some(q) = map.get_mut(key) else {
            return Ok(());
        };
        Self::expire(q, now, self.window);
        if q.len() < self.max as usize {
            return Ok(());
        }
        let oldest = q.front().copied().unwrap_or(now);
        Err(self
            .window
            .saturating_sub(now.saturating_duration_since(oldest)))
    }

    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut map = self.failures.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, q| {
                Self::expire(q, now, window);
                !q.is_empty()
            });
        }
        let q = map.entry(key.to_owned()).or_default();
        Self::expire(q, now, self.window);
        q.push_back(now);
        // Only the last `max` matter for the decision.
        while q.len() > self.max as usize {
            q.pop_front();
        }
    }

    /// A successful sign-in clears the account's failures.
    pub fn reset(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_passes() {
        let l = Limiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.check("a", t0).is_ok(), "attempt {i}");
            l.record_failure("a", t0 + Duration::from_secs(i));
        }
        let wait = l.check("a", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check("b", t0).is_ok(), "other keys are unaffected");
        // The first failure leaves the window at t0+60: one attempt again.
        assert!(l.check("a", t0 + Duration::from_secs(60)).is_ok());
        l.record_failure("a", t0 + Duration::from_secs(60));
        assert!(l.check("a", t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn reset_clears() {
        let l = Limiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        l.record_failure("a", t0);
        assert!(l.check("a", t0).is_err());
        l.reset("a");
        assert!(l.check("a", t0).is_ok());
    }
}
