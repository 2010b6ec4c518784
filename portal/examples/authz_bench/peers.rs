//! The load generator's peers: gateways that confirm every flow, clients
//! that request flows (closed loop or on a fixed schedule), idle clients.
//!
//! Frames from the portal are read only as far as needed (type, ids, flow
//! id) so the generator spends little CPU next to the portal.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use keyhole_proto::{
    Envelope, FlowId, RequestId, ResourceId,
    messages::{
        ClientToPortal, FlowAuthorized, GatewayHeartbeat, GatewayLoad, GatewayToPortal,
        PortalToClient, RequestFlow,
    },
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::control_common::{Ws, connect_client, frame, key};

/// The parts of a portal frame the generator looks at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    reply_to: Option<u64>,
    #[serde(default)]
    payload: Option<FlowRef>,
}

#[derive(Deserialize)]
struct FlowRef {
    #[serde(default)]
    flow_id: Option<FlowId>,
}

fn head(text: &str) -> Option<Head<'_>> {
    serde_json::from_str(text).ok()
}

fn request_flow(id: u64, resource: ResourceId) -> Message {
    let text = Envelope::request(
        RequestId(id),
        ClientToPortal::RequestFlow(RequestFlow {
            resource_id: resource,
            connected_gateway_ids: vec![],
            dns: vec![],
        }),
    )
    .encode()
    .expect("request_flow encodes");
    Message::Text(text.into())
}

/// Confirm every `authorize_flow` at once, writing replies in batches;
/// heartbeat every 10 s so the portal keeps choosing this gateway.
pub async fn run_gateway(ws: Ws) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    for m in batch.drain(..) {
                        if sink.feed(Message::Text(m.into())).await.is_err() {
                            return;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = Envelope::new(GatewayToPortal::Heartbeat(GatewayHeartbeat {
                        load: GatewayLoad::default(),
                    }));
                    if sink.feed(Message::Text(beat.encode().unwrap().into())).await.is_err() {
                        return;
                    }
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        if let Some(Head {
            kind: "authorize_flow",
            id: Some(id),
            payload: Some(FlowRef {
                flow_id: Some(flow_id),
            }),
            ..
        }) = head(&t)
        {
            let reply = Envelope::reply(
                RequestId(id),
                GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id }),
            );
            let _ = tx.send(reply.encode().unwrap());
        }
    }
}

/// What one client saw of the requests it counted (those sent, or
/// scheduled, inside the measured window).
#[derive(Default)]
pub struct ClientRun {
    /// Request → `flow_created`, µs.
    pub latencies: Vec<u32>,
    /// For each latency, when the request was scheduled (ms into the
    /// measured window; fixed-rate clients only).
    pub scheduled_ms: Vec<u32>,
    /// Scheduled time → actual send, µs (fixed-rate clients only).
    pub send_lag: Vec<u32>,
    pub offered: u64,
    /// Answers other than `flow_created`.
    pub failed: u64,
}

/// Whether an instant lies in the measured window.
#[derive(Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }
}

pub async fn connect_clients(addr: SocketAddr, token: &str, first_key: u32, n: usize) -> Vec<Ws> {
    let mut pending = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let mut ws = connect_client(addr, token, key(first_key + i as u32)).await;
            let _init = frame::<PortalToClient>(&mut ws).await;
            ws
        })
        .buffer_unordered(64);
    let mut conns = Vec::with_capacity(n);
    while let Some(ws) = pending.next().await {
        conns.push(ws);
    }
    conns
}

/// Keep `window` requests in flight until `stop`, then wait for the rest.
pub async fn run_closed_loop(
    ws: Ws,
    resource: ResourceId,
    in_flight: usize,
    measured: Window,
    stop: Arc<AtomicBool>,
) -> ClientRun {
    let (mut sink, mut stream) = ws.split();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 1u64;
    let mut run = ClientRun::default();
    for _ in 0..in_flight {
        sink.feed(request_flow(next_id, resource)).await.unwrap();
        sent.insert(next_id, Instant::now());
        next_id += 1;
    }
    sink.flush().await.unwrap();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let Some(Head {
            kind,
            reply_to: Some(to),
            ..
        }) = head(&t)
        else {
            continue;
        };
        let Some(at) = sent.remove(&to) else { continue };
        if measured.contains(at) {
            run.offered += 1;
            if kind == "flow_created" {
                run.latencies.push(at.elapsed().as_micros() as u32);
            } else {
                run.failed += 1;
            }
        }
        if stop.load(Ordering::Relaxed) {
            if sent.is_empty() {
                break;
            }
            continue;
        }
        sink.send(request_flow(next_id, resource)).await.unwrap();
        sent.insert(next_id, Instant::now());
        next_id += 1;
    }
    run
}

/// Request ids of the fixed-rate phase carry the scheduled send time (µs
/// since the phase's base) above a 10-bit sequence number, so the receiver
/// needs no table shared with the sender.
const SEQ_BITS: u32 = 10;

/// One fixed-rate client's schedule: a request at `first + k * period`
/// for every k with the time before `end`.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub base: Instant,
    pub first: Instant,
    pub period: Duration,
    pub end: Instant,
    pub measured: Window,
}

/// Send on the schedule whatever the answers do; measure each answer from
/// its *scheduled* time, so a stalled sender or portal cannot hide delay
/// (no coordinated omission). Answers are awaited up to 5 s after the
/// last send; requests never answered count as offered, not answered.
pub async fn run_fixed_rate(ws: Ws, resource: ResourceId, s: Schedule) -> ClientRun {
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        // Wake once per millisecond and send every request whose time has
        // come in one flush: one timer and one write per wake-up. The
        // wake-up granularity shows up as send lag (reported).
        let mut wake = tokio::time::interval_at(s.first.into(), Duration::from_millis(1));
        wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut k = 0u64;
        let mut sent = 0u64;
        let mut offered = 0u64;
        let mut lag = Vec::new();
        'run: loop {
            wake.tick().await;
            let now = Instant::now();
            let mut fed = false;
            loop {
                let at = s.first + s.period.mul_f64(k as f64);
                if at >= s.end {
                    if fed {
                        let _ = sink.flush().await;
                    }
                    break 'run;
                }
                if at > now {
                    break;
                }
                k += 1;
                let micros = at.duration_since(s.base).as_micros() as u64;
                let id = (micros << SEQ_BITS) | (k & ((1 << SEQ_BITS) - 1));
                if sink.feed(request_flow(id, resource)).await.is_err() {
                    break 'run;
                }
                if s.measured.contains(at) {
                    offered += 1;
                    lag.push(now.duration_since(at).as_micros() as u32);
                }
                sent += 1;
                fed = true;
            }
            if fed && sink.flush().await.is_err() {
                break;
            }
        }
        (sink, sent, offered, lag)
    });
    let mut run = ClientRun::default();
    let mut answered = 0u64;
    let mut total: Option<u64> = None;
    let mut sender = Some(sender);
    // The write half, kept open until the answers are in.
    let mut _sink = None;
    loop {
        if let Some(t) = total
            && answered >= t
        {
            break;
        }
        let next = match &mut sender {
            Some(h) => tokio::select! {
                r = h => {
                    let (sink, sent, offered, lag) = r.expect("sender task");
                    _sink = Some(sink);
                    total = Some(sent);
                    run.offered = offered;
                    run.send_lag = lag;
                    sender = None;
                    continue;
                }
                m = stream.next() => m,
            },
            None => match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let Some(Ok(msg)) = next else { break };
        let Message::Text(t) = msg else { continue };
        let Some(Head {
            kind,
            reply_to: Some(to),
            ..
        }) = head(&t)
        else {
            continue;
        };
        answered += 1;
        let scheduled = s.base + Duration::from_micros(to >> SEQ_BITS);
        if !s.measured.contains(scheduled) {
            continue;
        }
        if kind == "flow_created" {
            run.latencies.push(scheduled.elapsed().as_micros() as u32);
            run.scheduled_ms
                .push(scheduled.duration_since(s.measured.from).as_millis() as u32);
        } else {
            run.failed += 1;
        }
    }
    run
}
