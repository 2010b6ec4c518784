//! Control-channel benchmark (not a test): flow authorisations per second
//! end to end over real WebSockets, and RSS with many idle clients.
//!
//! ```text
//! cargo run --release -p keyhole-portal --example authz_bench -- \
//!     [--clients 64] [--window 8] [--gateways 2] [--seconds 10] \
//!     [--rate 20000] [--rate-clients 16] [--idle 10000]
//! ```
//!
//! A portal runs in this process on SQLite in a temp dir; `--gateways` test
//! gateways confirm every `authorize_flow`. Two load phases:
//!
//! - throughput (closed loop): `--clients` service-account clients each keep
//!   `--window` `request_flow`s in flight. This finds the maximum rate; its
//!   latency is mostly queueing (Little's law: in flight / rate).
//! - latency at a fixed offered rate (open loop, `--rate`, 0 skips it):
//!   `--rate-clients` clients send on a fixed schedule that adds up to
//!   `--rate` requests/s whatever the answers do. Latency runs from the
//!   *scheduled* send time to `flow_created`, so a stalled sender does not
//!   hide the delay (no coordinated omission).
//!
//! All clients of a phase connect before any sends. Clients
//! never give flows back, so the portal's live-flow count afterwards is every
//! `flow_created` of the run (warm-up + measured + drain), not just the
//! measured ones. Idle phase: a child process (this binary with
//! `idle-clients`) opens `--idle` client connections; the portal process's
//! RSS is read from /proc once all have received `init`.

#[path = "../tests/control_common/mod.rs"]
mod control_common;

use std::{
    collections::HashMap,
    io::{BufRead as _, Write as _},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use control_common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use keyhole_portal::{
    control::{ControlConfig, tasks::reload_snapshot},
    policy::{ActorId, Conditions},
    store::{NewPolicy, NewResource, TokenKind, TokenOwner},
};
use keyhole_proto::{
    Decoded, Envelope, RequestId, ResourceAddress, ResourceName, decode,
    messages::{
        ClientToPortal, FlowAuthorized, GatewayToPortal, PortalToClient, PortalToGateway,
        RequestFlow,
    },
};
use tokio_tungstenite::tungstenite;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn raise_fd_limit() {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("idle-clients") {
        rt.block_on(idle_clients(
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            args[4].clone(),
        ));
    } else {
        rt.block_on(bench());
    }
}

async fn bench() {
    let clients = arg("--clients", 64) as usize;
    let window = arg("--window", 8) as usize;
    let gateways = arg("--gateways", 2) as usize;
    let seconds = arg("--seconds", 10);
    let idle = arg("--idle", 10_000) as usize;
    let rate = arg("--rate", 20_000);
    let rate_clients = arg("--rate-clients", 16) as usize;

    let dir = temp_dir("authz-bench");
    let portal = start_portal(dir.clone(), None, ControlConfig::default()).await;
    let store = portal.app.store.clone();
    let now = Utc::now();
    let site = portal
        .first_start
        .as_ref()
        .and_then(|f| f.default_site.clone())
        .unwrap();
    let sa = store.create_service_account("bench", now).await.unwrap();
    let group = store.create_group("bench", now).await.unwrap();
    store
        .add_member(group.id, ActorId::ServiceAccount(sa.id))
        .await
        .unwrap();
    let resource = store
        .create_resource(
            NewResource {
                name: ResourceName::try_from("bench".to_owned()).unwrap(),
                address: ResourceAddress::Cidr {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                },
                filters: vec![],
                site_ids: vec![site.id],
            },
            now,
        )
        .await
        .unwrap();
    store
        .create_policy(
            NewPolicy {
                group_id: group.id,
                resource_id: resource.id,
                enabled: true,
                conditions: Conditions::default(),
                description: String::new(),
            },
            now,
        )
        .await
        .unwrap();
    let gw_token = store
        .create_token(
            TokenKind::Gateway,
            TokenOwner::Site(site.id),
            None,
            None,
            now,
        )
        .await
        .unwrap();
    let sa_token = store
        .create_token(
            TokenKind::ServiceAccount,
            TokenOwner::ServiceAccount(sa.id),
            None,
            None,
            now,
        )
        .await
        .unwrap();
    reload_snapshot(&store, &portal.hub).await;
    let addr = portal.addr;

    // Gateways: confirm everything, writing replies in batches.
    for g in 0..gateways {
        let ws = connect_gateway(addr, &gw_token.secret, key(1_000_000 + g as u32)).await;
        tokio::spawn(run_gateway(ws));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Connect every client before any sends: connecting while earlier
    // clients already load the portal stretched the "2 s" warm-up to many
    // seconds of unmeasured authorisations.
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut ws = connect_client(addr, &sa_token.secret, key(c as u32)).await;
        let _init = frame::<PortalToClient>(&mut ws).await;
        conns.push(ws);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| {
            tokio::spawn(run_client(
                ws,
                resource.id,
                window,
                stop.clone(),
                measuring.clone(),
            ))
        })
        .collect();
    println!(
        "load: {clients} clients x {window} in flight, {gateways} gateways, {seconds} s (after 2 s warm-up)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    let mut answered = 0u64;
    for t in tasks {
        let done = t.await.unwrap();
        lat.extend(done.latencies);
        answered += done.answered;
    }
    report("throughput (closed loop)", &mut lat, elapsed);

    if rate > 0 {
        let mut conns = Vec::with_capacity(rate_clients);
        for c in 0..rate_clients {
            let mut ws = connect_client(addr, &sa_token.secret, key(2_000_000 + c as u32)).await;
            let _init = frame::<PortalToClient>(&mut ws).await;
            conns.push(ws);
        }
        println!(
            "fixed rate: {rate}/s offered by {rate_clients} clients, {seconds} s (after 2 s warm-up)"
        );
        let period = Duration::from_secs_f64(rate_clients as f64 / rate as f64);
        let base = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, ws)| {
                // Spread the clients' schedules over one period.
                let offset = period.mul_f64(i as f64 / rate_clients as f64);
                tokio::spawn(run_client_at_rate(
                    ws,
                    resource.id,
                    base + offset,
                    period,
                    base,
                    stop.clone(),
                    measuring.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut lat: Vec<u32> = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap().latencies);
        }
        report(&format!("latency at {rate}/s offered"), &mut lat, elapsed);
    }
    // Bench clients never give flows back, so every `flow_created` of the
    // whole run (warm-up, measured window, drain) is still live.
    println!(
        "portal: {} live flows ({} authorised by the portal, {answered} flow_created received by clients over warm-up + measured + drain), RSS {:.0} MiB",
        portal.hub.with_core(|c, _| c.live_flows()),
        portal
            .hub
            .metrics()
            .flows_authorized
            .load(Ordering::Relaxed),
        rss_mib()
    );

    if idle > 0 {
        idle_phase(addr, &sa_token.secret, idle).await;
    }
    portal.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

fn report(phase: &str, lat: &mut [u32], elapsed: Duration) {
    if lat.is_empty() {
        println!("{phase}: no answers");
        return;
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "{phase}: {} in {:.1} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
}

async fn idle_phase(addr: SocketAddr, token: &str, n: usize) {
    let before = rss_mib();
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args(["idle-clients", &addr.to_string(), &n.to_string(), token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib();
    println!(
        "idle: {} in {:.1} s; portal process RSS {before:.0} MiB before, {after:.0} MiB with them ({:.1} KiB per client)",
        ready.trim(),
        t0.elapsed().as_secs_f64(),
        (after - before) * 1024.0 / n as f64
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Child process: hold `n` idle client connections until stdin closes.
async fn idle_clients(addr: SocketAddr, n: usize, token: String) {
    let token = Arc::new(token);
    let mut held = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter(0..n)
        .map(|i| {
            let token = token.clone();
            async move {
                let mut ws = connect_client(addr, &token, key(5_000_000 + i as u32)).await;
                let _init = frame::<PortalToClient>(&mut ws).await;
                ws
            }
        })
        .buffer_unordered(64);
    while let Some(ws) = pending.next().await {
        held.push(ws);
    }
    println!("{} clients connected", held.len());
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await
    .unwrap();
}

async fn run_gateway(ws: Ws) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
                if batch.len() >= 256 {
                    break;
                }
            }
            for m in batch {
                if sink
                    .feed(tungstenite::Message::Text(m.into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        let tungstenite::Message::Text(t) = msg else {
            continue;
        };
        if let Ok(Decoded::Known(env)) = decode::<PortalToGateway>(t.as_bytes())
            && let (Some(id), PortalToGateway::AuthorizeFlow(a)) = (env.id, env.message)
        {
            let reply = Envelope::reply(
                id,
                GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id: a.flow_id }),
            );
            let _ = tx.send(reply.encode().unwrap());
        }
    }
}

/// What one bench client saw.
struct ClientRun {
    /// Latencies (µs) of answers received while `measuring` was set.
    latencies: Vec<u32>,
    /// Every `flow_created` received, measured or not.
    answered: u64,
}

/// Keep `window` requests in flight until `stop`, then wait for the rest.
async fn run_client(
    ws: Ws,
    resource: keyhole_proto::ResourceId,
    window: usize,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> ClientRun {
    let (mut sink, mut stream) = ws.split();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 1u64;
    let mut lat = Vec::new();
    let mut answered = 0u64;
    let request = |id: u64| {
        Envelope::request(
            RequestId(id),
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: resource,
                connected_gateway_ids: vec![],
                dns: vec![],
            }),
        )
        .encode()
        .unwrap()
    };
    for _ in 0..window {
        sink.feed(tungstenite::Message::Text(request(next_id).into()))
            .await
            .unwrap();
        sent.insert(next_id, Instant::now());
        next_id += 1;
    }
    sink.flush().await.unwrap();
    while let Some(Ok(msg)) = stream.next().await {
        let tungstenite::Message::Text(t) = msg else {
            continue;
        };
        let Ok(Decoded::Known(env)) = decode::<PortalToClient>(t.as_bytes()) else {
            continue;
        };
        let Some(to) = env.reply_to else { continue };
        let Some(at) = sent.remove(&to.0) else {
            continue;
        };
        match env.message {
            PortalToClient::FlowCreated(_) => {
                answered += 1;
                if measuring.load(Ordering::Relaxed) {
                    lat.push(at.elapsed().as_micros() as u32);
                }
            }
            other => panic!("unexpected answer {other:?}"),
        }
        if stop.load(Ordering::Relaxed) {
            if sent.is_empty() {
                break;
            }
            continue;
        }
        sink.send(tungstenite::Message::Text(request(next_id).into()))
            .await
            .unwrap();
        sent.insert(next_id, Instant::now());
        next_id += 1;
    }
    ClientRun {
        latencies: lat,
        answered,
    }
}

/// Request ids of the fixed-rate phase carry the scheduled send time (µs
/// since `base`) above a 10-bit sequence number, so the receiver needs no
/// shared table.
const SEQ_BITS: u32 = 10;

/// Send one `request_flow` per `period` from `start` until `stop`
/// (checked every millisecond),
/// whatever the answers do; measure each from its scheduled time.
async fn run_client_at_rate(
    ws: Ws,
    resource: keyhole_proto::ResourceId,
    start: Instant,
    period: Duration,
    base: Instant,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> ClientRun {
    let (mut sink, mut stream) = ws.split();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let sent = sent.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // Wake once per millisecond and send every request whose
            // scheduled time has come, in one flush: one timer and one
            // write per wake-up instead of per request.
            let mut wake = tokio::time::interval_at(start.into(), Duration::from_millis(1));
            wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0u64;
            'run: while !stop.load(Ordering::Relaxed) {
                wake.tick().await;
                let now = Instant::now();
                let mut fed = false;
                loop {
                    let at = start + period.mul_f64(k as f64);
                    if at > now {
                        break;
                    }
                    let micros = at.duration_since(base).as_micros() as u64;
                    k += 1;
                    let id = (micros << SEQ_BITS) | (k & ((1 << SEQ_BITS) - 1));
                    let text = Envelope::request(
                        RequestId(id),
                        ClientToPortal::RequestFlow(RequestFlow {
                            resource_id: resource,
                            connected_gateway_ids: vec![],
                            dns: vec![],
                        }),
                    )
                    .encode()
                    .unwrap();
                    if sink
                        .feed(tungstenite::Message::Text(text.into()))
                        .await
                        .is_err()
                    {
                        break 'run;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    fed = true;
                }
                if fed && sink.flush().await.is_err() {
                    break;
                }
            }
            sink
        })
    };
    let mut lat = Vec::new();
    let mut answered = 0u64;
    loop {
        let msg = if stop.load(Ordering::Relaxed) {
            if sender.is_finished() && answered >= sent.load(Ordering::Relaxed) {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            stream.next().await
        };
        let Some(Ok(tungstenite::Message::Text(t))) = msg else {
            if msg.is_none() {
                break;
            }
            continue;
        };
        let Ok(Decoded::Known(env)) = decode::<PortalToClient>(t.as_bytes()) else {
            continue;
        };
        let Some(to) = env.reply_to else { continue };
        match env.message {
            PortalToClient::FlowCreated(_) => {
                answered += 1;
                if measuring.load(Ordering::Relaxed) {
                    let scheduled = base + Duration::from_micros(to.0 >> SEQ_BITS);
                    lat.push(scheduled.elapsed().as_micros() as u32);
                }
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let _ = sender.await;
    ClientRun {
        latencies: lat,
        answered,
    }
}
