//! The sans-IO side of `keyhole login`'s polling (RFC 8628 section 3.5):
//! what the portal's answer to a poll means ([`classify`]) and when to
//! poll next ([`Poller`]). The IO shell in `login.rs` does the requests and
//! the sleeping.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// What one poll of `/api/v1/device/token` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Token(String),
    Pending,
    /// Too fast; the portal may say the new interval.
    SlowDown(Option<u64>),
    Expired,
    Denied,
    /// 429: wait at least this long.
    RateLimited(Option<u64>),
    /// The portal could not be reached or answered something unexpected;
    /// worth another try until the request expires.
    Transient(String),
    /// A refusal that polling again will not change.
    Fatal(String),
}

#[derive(Deserialize)]
struct Body {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    message: Option<String>,
    interval: Option<u64>,
}

/// Reads a poll's HTTP status, body and `Retry-After` header.
pub fn classify(status: u16, body: &str, retry_after: Option<&str>) -> Answer {
    let parsed: Option<Body> = serde_json::from_str(body).ok();
    let detail = |b: &Body| {
        b.error_description
            .clone()
            .or_else(|| b.message.clone())
            .unwrap_or_default()
    };
    match (status, parsed) {
        (
            200,
            Some(Body {
                access_token: Some(t),
                ..
            }),
        ) if !t.is_empty() => Answer::Token(t),
        (429, b) => Answer::RateLimited(
            retry_after
                .and_then(|v| v.trim().parse().ok())
                .or_else(|| b.and_then(|b| b.interval)),
        ),
        (400, Some(b)) => match b.error.as_deref() {
            Some("authorization_pending") => Answer::Pending,
            Some("slow_down") => Answer::SlowDown(b.interval),
            Some("expired_token") => Answer::Expired,
            Some("access_denied") => Answer::Denied,
            Some(e) => Answer::Fatal(format!("{e}: {}", detail(&b))),
            None => Answer::Fatal(format!("portal refused the poll: {}", detail(&b))),
        },
        (s, _) if s >= 500 => Answer::Transient(format!("portal answered HTTP {s}")),
        (s, b) => Answer::Fatal(format!(
            "unexpected answer HTTP {s}: {}",
            b.map(|b| detail(&b))
                .unwrap_or_else(|| body.chars().take(200).collect())
        )),
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    PollAt(Instant),
    Done(String),
    Failed(String),
}

/// Keeps the polling interval and the request's deadline.
#[derive(Debug)]
pub struct Poller {
    interval: Duration,
    deadline: Instant,
}

/// RFC 8628: a client told to slow down adds 5 s to its interval.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

impl Poller {
    /// `interval` and `expires_in` as the portal sent them (seconds).
    pub fn new(now: Instant, interval: u64, expires_in: u64) -> Self {
        Self {
            interval: Duration::from_secs(interval.max(1)),
            deadline: now + Duration::from_secs(expires_in),
        }
    }

    /// The first poll waits one interval too: the user needs time anyway.
    pub fn start(&self, now: Instant) -> Step {
        self.wait(now, self.interval)
    }

    fn wait(&self, now: Instant, d: Duration) -> Step {
        let at = now + d;
        if at > self.deadline {
            return Step::Failed(
                "the sign-in request expired before it was approved; run `keyhole login` again"
                    .into(),
            );
        }
        Step::PollAt(at)
    }

    pub fn handle(&mut self, now: Instant, answer: Answer) -> Step {
        match answer {
            Answer::Token(t) => Step::Done(t),
            Answer::Pending => self.wait(now, self.interval),
            Answer::SlowDown(said) => {
                let said = said.map(Duration::from_secs).unwrap_or_default();
                self.interval = (self.interval + SLOW_DOWN_STEP).max(said);
                self.wait(now, self.interval)
            }
            Answer::RateLimited(after) => {
                let after = after.map(Duration::from_secs).unwrap_or_default();
                self.wait(now, after.max(self.interval))
            }
            Answer::Transient(e) => {
                tracing::warn!(error = %e, "polling the portal; trying again");
                self.wait(now, self.interval)
            }
            Answer::Expired => {
                Step::Failed("the sign-in request expired; run `keyhole login` again".into())
            }
            Answer::Denied => Step::Failed("the sign-in was denied in the browser".into()),
            Answer::Fatal(e) => Step::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_per_rfc_8628() {
        let err = |e: &str| format!(r#"{{"error":"{e}","error_description":"x"}}"#);
        assert_eq!(
            classify(
                200,
                r#"{"access_token":"kh_abc","token_type":"Bearer"}"#,
                None
            ),
            Answer::Token("kh_abc".into())
        );
        assert_eq!(
            classify(400, &err("authorization_pending"), None),
            Answer::Pending
        );
        assert_eq!(
            classify(
                400,
                r#"{"error":"slow_down","error_description":"x","interval":10}"#,
                None
            ),
            Answer::SlowDown(Some(10))
        );
        assert_eq!(classify(400, &err("expired_token"), None), Answer::Expired);
        assert_eq!(classify(400, &err("access_denied"), None), Answer::Denied);
        assert!(matches!(
            classify(400, &err("invalid_grant"), None),
            Answer::Fatal(m) if m.starts_with("invalid_grant")
        ));
        assert_eq!(
            classify(429, "{}", Some("30")),
            Answer::RateLimited(Some(30))
        );
        assert!(matches!(
            classify(502, "bad gateway", None),
            Answer::Transient(_)
        ));
        assert!(matches!(classify(200, "{}", None), Answer::Fatal(_)));
        assert!(matches!(classify(404, "<html>", None), Answer::Fatal(m) if m.contains("<html>")));
    }

    #[test]
    fn polling_keeps_the_interval_and_slows_down() {
        let t0 = Instant::now();
        let mut p = Poller::new(t0, 5, 600);
        assert_eq!(p.start(t0), Step::PollAt(t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            p.handle(t1, Answer::Pending),
            Step::PollAt(t1 + Duration::from_secs(5))
        );
        // slow_down adds 5 s (or takes the portal's larger value) and the
        // new interval sticks.
        assert_eq!(
            p.handle(t1, Answer::SlowDown(None)),
            Step::PollAt(t1 + Duration::from_secs(10))
        );
        assert_eq!(
            p.handle(t1, Answer::SlowDown(Some(30))),
            Step::PollAt(t1 + Duration::from_secs(30))
        );
        assert_eq!(
            p.handle(t1, Answer::Pending),
            Step::PollAt(t1 + Duration::from_secs(30))
        );
        assert_eq!(
            p.handle(t1, Answer::RateLimited(Some(60))),
            Step::PollAt(t1 + Duration::from_secs(60))
        );
        assert_eq!(
            p.handle(t1, Answer::Token("kh_x".into())),
            Step::Done("kh_x".into())
        );
    }

    #[test]
    fn polling_ends_at_expiry_denial_and_fatal_answers() {
        let t0 = Instant::now();
        let mut p = Poller::new(t0, 5, 12);
        let late = t0 + Duration::from_secs(10);
        assert!(
            matches!(p.handle(late, Answer::Pending), Step::Failed(m) if m.contains("expired"))
        );
        assert!(matches!(p.handle(t0, Answer::Expired), Step::Failed(_)));
        assert!(matches!(p.handle(t0, Answer::Denied), Step::Failed(m) if m.contains("denied")));
        assert!(matches!(
            p.handle(t0, Answer::Transient("down".into())),
            Step::PollAt(_)
        ));
        assert!(matches!(
            p.handle(t0, Answer::Fatal("invalid_grant".into())),
            Step::Failed(_)
        ));
        // A zero interval from a broken portal still waits a second.
        let p = Poller::new(t0, 0, 60);
        assert_eq!(p.start(t0), Step::PollAt(t0 + Duration::from_secs(1)));
    }
}
