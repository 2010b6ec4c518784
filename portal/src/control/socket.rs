//! One WebSocket connection: a writer task draining the connection's send
//! queue (batched: feed several frames, flush once), and a reader that
//! yields protocol frames and handles pings, closes and size limits.

use std::{sync::Arc, time::Duration};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{
    SinkExt as _, StreamExt as _,
    stream::{SplitSink, SplitStream},
};
use keyhole_proto::{CLOSE_MESSAGE_TOO_BIG, DecodeError, Decoded, Message as ProtoMessage};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    core::{ConnId, Outbound},
    hub::{Hub, Kill},
};
use crate::metrics::Metrics;

/// Frames written before one flush.
const WRITE_BATCH: usize = 128;

/// How long to wait for the peer's close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Normal closure (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;

fn encode(msg: &Outbound) -> Result<String, serde_json::Error> {
    match msg {
        Outbound::Gateway(e) => e.encode(),
        Outbound::Client(e) => e.encode(),
        Outbound::Relay(e) => e.encode(),
        Outbound::Close { .. } => Ok(String::new()),
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Ping cadence of a connection: a ping every `interval`; a peer from
/// which nothing arrived for `interval + timeout` is dead.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Write queued frames until the queue closes, the core asks to close, or
/// the connection is killed; ping the peer and close if it went silent.
pub async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    kill: Arc<Kill>,
    metrics: Arc<Metrics>,
    liveness: Liveness,
) {
    let mut batch = Vec::new();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + liveness.interval,
        liveness.interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            code = kill.killed() => {
                let _ = sink.send(close_message(code, close_reason(code))).await;
                return;
            }
            _ = ping.tick() => {
                if kill.silent_for() >= liveness.interval + liveness.timeout {
                    tracing::info!("peer stopped answering pings, closing");
                    Metrics::inc(&metrics.ws_ping_timeouts);
                    let code = super::hub::CLOSE_PING_TIMEOUT;
                    // A dead peer may never take the close frame.
                    let _ = tokio::time::timeout(
                        CLOSE_GRACE,
                        sink.send(close_message(code, close_reason(code))),
                    )
                    .await;
                    return;
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
                continue;
            }
            m = rx.recv() => match m {
                Some(m) => m,
                None => {
                    let _ = sink.send(close_message(CLOSE_NORMAL, "")).await;
                    return;
                }
            },
        };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        for msg in batch.drain(..) {
            if let Outbound::Close { code, reason } = msg {
                let _ = sink.send(close_message(code, reason)).await;
                return;
            }
            let text = match encode(&msg) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a control frame failed");
                    continue;
                }
            };
            if sink.feed(Message::Text(text.into())).await.is_err() {
                return;
            }
            Metrics::inc(&metrics.ws_frames_sent);
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_MESSAGE_TOO_BIG => "frame too large",
        keyhole_proto::CLOSE_PROTOCOL_ERROR => "protocol error",
        super::hub::CLOSE_SLOW_CONSUMER => "send queue full",
        super::hub::CLOSE_PING_TIMEOUT => "no answer to pings",
        super::hub::CLOSE_GOING_AWAY => "portal shutting down",
        _ => "",
    }
}

/// The read side of a connection.
pub struct Reader {
    stream: SplitStream<WebSocket>,
    writer: Option<JoinHandle<()>>,
    kill: Arc<Kill>,
    metrics: Arc<Metrics>,
}

impl Reader {
    pub fn new(
        stream: SplitStream<WebSocket>,
        writer: JoinHandle<()>,
        kill: Arc<Kill>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            stream,
            writer: Some(writer),
            kill,
            metrics,
        }
    }

    /// Close the connection with `code` (the writer sends the close frame).
    pub fn close(&self, code: u16) {
        self.kill.kill(code);
    }

    /// The next text or binary frame; `None` once the connection is over.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            let writer = self.writer.as_mut()?;
            tokio::select! {
                _ = writer => {
                    // We closed: give the peer a moment to answer.
                    self.writer = None;
                    let _ = tokio::time::timeout(CLOSE_GRACE, async {
                        while let Some(Ok(m)) = self.stream.next().await {
                            if matches!(m, Message::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    return None;
                }
                m = self.stream.next() => {
                    if let Some(Ok(_)) = &m {
                        self.kill.heard();
                    }
                    match m {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                        Metrics::inc(&self.metrics.ws_frames_received);
                        return Some(m.into_data());
                    }
                    Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings
                    Some(Err(e)) => {
                        if is_too_big(e) {
                            tracing::warn!("peer sent a frame over the socket limit");
                            self.close(CLOSE_MESSAGE_TOO_BIG);
                            continue;
                        }
                        return None;
                    }
                    }
                }
            }
        }
    }

    /// Stop the writer if it is still running. The read side is over, so
    /// the writer answers with a close frame and ends now; waiting for its
    /// queue to close would hold back the disconnect (and a failover) by
    /// the whole grace.
    pub async fn finish(mut self) {
        if self.writer.is_some() {
            self.kill.kill(CLOSE_NORMAL);
        }
        if let Some(mut w) = self.writer.take()
            && tokio::time::timeout(CLOSE_GRACE, &mut w).await.is_err()
        {
            w.abort();
        }
    }
}

fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::{Error, error::CapacityError};
    matches!(
        e.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(CapacityError::MessageTooLong { .. }))
    )
}

/// Shared handling of frames that are not a known message: unknown types
/// are logged and ignored, bad payloads answered with an error, broken
/// envelopes and oversized frames close the connection.
pub fn handle_undecoded<M: ProtoMessage>(
    hub: &Hub,
    conn: ConnId,
    reader: &Reader,
    outcome: Result<Decoded<M>, DecodeError>,
) {
    match outcome {
        Ok(Decoded::Known(_)) => {}
        Ok(Decoded::Unknown { type_name, .. }) => {
            Metrics::inc(&hub.metrics().ws_frames_unknown);
            tracing::debug!(conn = conn.0, %type_name, "ignoring unknown message type");
        }
        Err(e) => {
            Metrics::inc(&hub.metrics().ws_frames_invalid);
            match e.close_code() {
                Some(code) => {
                    tracing::info!(conn = conn.0, error = %e, "closing connection");
                    reader.close(code);
                }
                None => {
                    let id = match &e {
                        DecodeError::Payload { id, .. } => *id,
                        _ => None,
                    };
                    tracing::debug!(conn = conn.0, error = %e, "bad message");
                    hub.with_core(|core, _| core.bad_request(conn, id, e.to_string()));
                }
            }
        }
    }
}
