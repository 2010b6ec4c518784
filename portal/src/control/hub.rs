//! The shell around [`ControlCore`]: one mutex-guarded core shared by every
//! connection task, and a bounded send queue per connection.
//!
//! A task calls [`Hub::with_core`] with an input; the core's output frames
//! are routed to the queues before the lock is released (a non-blocking
//! `try_send` each), and each connection's writer task encodes and writes
//! its own frames, so JSON encoding runs outside the lock and in parallel.

use std::sync::{
    Arc,
    atomic::{AtomicU16, AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::HashMap;
use tokio::sync::{Notify, mpsc};

use super::core::{ConnId, ControlCore, Outbound};
use crate::{metrics::Metrics, store::FlowLogEntry};

/// Close code for a peer that does not read its frames fast enough
/// (RFC 6455 "Try Again Later").
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

/// Close code for a peer that stopped answering pings.
pub const CLOSE_PING_TIMEOUT: u16 = 4002;

/// Close code when the portal shuts down (RFC 6455 "Going Away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Shared by a connection's reader and writer: asks the writer to close the
/// socket now, ahead of queued frames, and tells it when the reader last
/// heard from the peer (for the ping timeout).
pub struct Kill {
    code: AtomicU16,
    notify: Notify,
    /// Milliseconds since `born` at which the last frame arrived.
    last_rx: AtomicU64,
    born: tokio::time::Instant,
}

impl Default for Kill {
    fn default() -> Self {
        Self {
            code: AtomicU16::new(0),
            notify: Notify::new(),
            last_rx: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
        }
    }
}

impl Kill {
    /// Something arrived from the peer.
    pub fn heard(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_rx.store(ms, Ordering::Relaxed);
    }

    /// How long since anything arrived from the peer.
    pub fn silent_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_rx.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    pub fn kill(&self, code: u16) {
        self.code.store(code, Ordering::Relaxed);
        // Stores a permit if the writer is not waiting right now.
        self.notify.notify_one();
    }

    pub async fn killed(&self) -> u16 {
        self.notify.notified().await;
        self.code.load(Ordering::Relaxed)
    }
}

struct ConnHandle {
    tx: mpsc::Sender<Outbound>,
    kill: Arc<Kill>,
}

struct Inner {
    core: ControlCore,
    conns: HashMap<ConnId, ConnHandle>,
    /// To the flow-log writer; `None` once [`Hub::shutdown`] closed it.
    flow_log: Option<mpsc::Sender<FlowLogEntry>>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    metrics: Arc<Metrics>,
}

/// What a connection task gets when it registers.
pub struct Registration {
    pub conn: ConnId,
    pub rx: mpsc::Receiver<Outbound>,
    pub kill: Arc<Kill>,
}

impl Hub {
    pub fn new(
        core: ControlCore,
        metrics: Arc<Metrics>,
        flow_log: mpsc::Sender<FlowLogEntry>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                core,
                conns: HashMap::new(),
                flow_log: Some(flow_log),
            }),
            next_conn: AtomicU64::new(1),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A new connection with a send queue of `capacity` frames.
    pub fn register(&self, capacity: usize) -> Registration {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(capacity);
        let kill = Arc::new(Kill::default());
        self.inner.lock().conns.insert(
            conn,
            ConnHandle {
                tx,
                kill: kill.clone(),
            },
        );
        Registration { conn, rx, kill }
    }

    /// The connection ended: tell the core, drop its queue.
    pub fn unregister(&self, conn: ConnId) {
        self.with_core(|core, now| core.disconnected(now, conn));
        self.inner.lock().conns.remove(&conn);
    }

    /// Shutting down: close every connection and the flow-log queue, so
    /// the writer drains what is queued and ends. From here on
    /// [`Self::with_core_open`] runs nothing, so no decision is made that
    /// the flow log would miss.
    pub fn shutdown(&self) {
        let mut inner = self.inner.lock();
        inner.flow_log = None;
        for handle in inner.conns.values() {
            handle.kill.kill(CLOSE_GOING_AWAY);
        }
    }

    /// [`Self::with_core`] unless the hub is shut down (`None` then): for
    /// peer input that may lead to decisions.
    pub fn with_core_open<R>(
        &self,
        f: impl FnOnce(&mut ControlCore, DateTime<Utc>) -> R,
    ) -> Option<R> {
        let now = Utc::now();
        let mut guard = self.inner.lock();
        guard.flow_log.as_ref()?;
        Some(self.run_locked(&mut guard, now, f))
    }

    /// Run `f` on the core with the current time, then route its output.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut ControlCore, DateTime<Utc>) -> R) -> R {
        self.with_core_at(Utc::now(), f)
    }

    pub fn with_core_at<R>(
        &self,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut ControlCore, DateTime<Utc>) -> R,
    ) -> R {
        let mut guard = self.inner.lock();
        self.run_locked(&mut guard, now, f)
    }

    fn run_locked<R>(
        &self,
        inner: &mut Inner,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut ControlCore, DateTime<Utc>) -> R,
    ) -> R {
        let r = f(&mut inner.core, now);
        while let Some(t) = inner.core.poll_transmit() {
            let Some(handle) = inner.conns.get(&t.conn) else {
                continue;
            };
            match handle.tx.try_send(t.msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(conn = t.conn.0, "send queue full, closing the connection");
                    Metrics::inc(&self.metrics.ws_slow_consumers_closed);
                    handle.kill.kill(CLOSE_SLOW_CONSUMER);
                    inner.conns.remove(&t.conn);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    inner.conns.remove(&t.conn);
                }
            }
        }
        for entry in inner.core.take_flow_log() {
            let sent = match &inner.flow_log {
                Some(tx) => tx.try_send(entry).is_ok(),
                None => false,
            };
            if !sent {
                Metrics::inc(&self.metrics.flow_log_dropped);
            }
        }
        r
    }
}
