//! Reconnect delays: exponential with full jitter, reset after a
//! connection that lasted.

use std::time::Duration;

/// Exponential backoff with jitter. Sans-IO: the caller supplies the
/// randomness (a value in `0.0..1.0`) so tests are deterministic.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: a uniform pick in
    /// `[cap/2, cap]` where `cap = min(max, initial * 2^attempt)`. Half the
    /// cap is kept so a flapping portal is not hammered by lucky draws.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        let cap = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let r = random.clamp(0.0, 1.0);
        cap.mul_f64(0.5 + r / 2.0)
    }

    /// A connection got through (`init` arrived): start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(200));
        for _ in 0..40 {
            let d = b.next_delay(0.999);
            assert!(d <= Duration::from_secs(2), "{d:?}");
        }
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(75));
    }
}
