//! Control-channel benchmark (not a test): flow authorisations per second
//! end to end over real WebSockets, latency at fixed offered rates, and RSS
//! with many idle clients. Usage and figures: portal/README.md.
//!
//! ```text
//! cargo run --release -p keyhole-portal --example authz_bench -- \
//!     [--clients 64] [--window 8] [--gateways 2] [--seconds 10] [--warmup 2] \
//!     [--rate 20000[,30000...]] [--rate-clients 16] [--idle 10000] [--pin]
//! ```
//!
//! The portal runs in a child process (this binary with `portal`) on SQLite
//! in a temp dir; this process is the load generator: `--gateways` gateways
//! confirming every `authorize_flow`, and clients requesting flows. CPU is
//! read from /proc per process, so the portal's share, the generator's and
//! that of everything else on the machine are reported apart. `--pin` puts
//! the portal on CPU 0 and the generator on CPU 1. The portal runs in its
//! own session (setsid): where the kernel groups processes by session for
//! scheduling (autogroup), it then competes for CPU as a service of its
//! own rather than inside the generator's share.
//!
//! Phases (each with its own freshly connected clients, all connected
//! before any request, then `--warmup` s unmeasured, then `--seconds` s
//! measured):
//!
//! - closed loop (`--clients`, 0 skips it): each client keeps `--window`
//!   `request_flow`s in flight. Finds the maximum rate; its latency is
//!   mostly queueing (Little's law: in flight / rate).
//! - fixed rate (`--rate`, one phase per value, 0 skips): `--rate-clients`
//!   clients send on a schedule adding up to the rate whatever the answers
//!   do. Latency runs from the *scheduled* send time to `flow_created`
//!   (no coordinated omission); requests scheduled in the measured window
//!   count, however late their answer.
//!
//! Bench clients never give flows back, so the portal's live flows grow by
//! every authorisation of the run.

#[path = "../../tests/control_common/mod.rs"]
mod control_common;
mod peers;
mod portal_process;
mod proc_stats;
mod samples;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use keyhole_proto::ResourceId;

use peers::{ClientRun, Schedule, Window};
use proc_stats::{CpuUse, CpuWindow};

#[derive(Parser, Debug)]
#[command(about = "Keyhole portal authorisation benchmark")]
struct Args {
    /// Closed-loop clients (0 skips the closed-loop phase).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests each closed-loop client keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    #[arg(long, default_value_t = 2)]
    gateways: usize,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured seconds before each phase's measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Offered rates (requests/s) of the fixed-rate phases; 0 skips.
    #[arg(long, value_delimiter = ',', default_value = "20000")]
    rate: Vec<u64>,
    /// Clients sharing each fixed rate.
    #[arg(long, default_value_t = 16)]
    rate_clients: usize,
    /// Idle clients for the RSS measurement (0 skips).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Portal on CPU 0, load generator on CPU 1.
    #[arg(long)]
    pin: bool,
    /// Print fixed-rate latency per second of the measured window.
    #[arg(long)]
    timeline: bool,
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

/// Pin the calling thread (and the threads it starts later) to one CPU.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() {
    raise_fd_limit();
    if std::env::args().nth(1).as_deref() == Some("portal") {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(portal_process::run());
        return;
    }
    let args = Args::parse();
    if args.pin {
        pin_to(1).expect("pinning the load generator to CPU 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(args));
}

/// The portal child process and its stdio.
struct PortalProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

struct Ready {
    addr: SocketAddr,
    gateway_token: String,
    client_token: String,
    resource: ResourceId,
}

impl PortalProcess {
    fn spawn(pin: bool) -> (Self, Ready) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg("portal")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session, as a service would have: with the
                // kernel's autogroup scheduling the portal then gets its
                // own CPU share instead of splitting the generator's.
                libc::setsid();
                if pin {
                    pin_to(0)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting the portal process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut p = Self {
            child,
            stdin,
            lines,
        };
        let ready = p.expect_line("READY");
        let f: Vec<&str> = ready.split_whitespace().collect();
        let ready = Ready {
            addr: f[0].parse().unwrap(),
            gateway_token: f[1].to_owned(),
            client_token: f[2].to_owned(),
            resource: f[3].parse().unwrap(),
        };
        (p, ready)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn expect_line(&mut self, tag: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the portal process answers");
            if let Some(rest) = line.strip_prefix(tag) {
                return rest.trim().to_owned();
            }
        }
    }

    fn stats(&mut self) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "stats").unwrap();
        stdin.flush().unwrap();
        self.expect_line("STATS")
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

async fn bench(args: Args) {
    println!(
        "machine: {} CPUs, load average {} before start{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        proc_stats::loadavg(),
        if args.pin {
            "; portal pinned to CPU 0, load generator to CPU 1"
        } else {
            ""
        }
    );
    let (mut portal, ready) = PortalProcess::spawn(args.pin);
    let pid = portal.pid();
    for g in 0..args.gateways {
        let ws = control_common::connect_gateway(
            ready.addr,
            &ready.gateway_token,
            control_common::key(1_000_000 + g as u32),
        )
        .await;
        tokio::spawn(peers::run_gateway(ws));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    if args.clients > 0 {
        closed_loop(&args, &ready, pid).await;
    }
    for (i, &rate) in args.rate.iter().enumerate().filter(|(_, r)| **r > 0) {
        fixed_rate(&args, &ready, pid, rate, 2_000_000 + 100_000 * i as u32).await;
    }
    println!(
        "portal: {}, RSS {:.0} MiB",
        portal.stats(),
        proc_stats::rss_mib(pid)
    );
    if args.idle > 0 {
        idle(&ready, pid, args.idle).await;
    }
    portal.stop();
    println!("load average {} at the end", proc_stats::loadavg());
}

async fn closed_loop(args: &Args, ready: &Ready, pid: u32) {
    let conns = peers::connect_clients(ready.addr, &ready.client_token, 0, args.clients).await;
    println!(
        "closed loop: {} clients x {} in flight, {} gateways, {} s after {} s warm-up",
        args.clients, args.window, args.gateways, args.seconds, args.warmup
    );
    let from = Instant::now() + Duration::from_secs(args.warmup);
    let measured = Window {
        from,
        to: from + Duration::from_secs(args.seconds),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| {
            tokio::spawn(peers::run_closed_loop(
                ws,
                ready.resource,
                args.window,
                measured,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep_until(measured.from.into()).await;
    let cpu = CpuWindow::start(pid);
    tokio::time::sleep_until(measured.to.into()).await;
    let cpu = cpu.finish();
    stop.store(true, Ordering::Relaxed);
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.unwrap());
    }
    let (rate, _) = report("closed loop", runs, args.seconds, cpu);
    samples::record("closed_loop_rate", VARIANT, "authorisations/s", rate);
}

/// The variant name of this benchmark's samples.
const VARIANT: &str = "portal on SQLite";

async fn fixed_rate(args: &Args, ready: &Ready, pid: u32, rate: u64, first_key: u32) {
    let n = args.rate_clients;
    let conns = peers::connect_clients(ready.addr, &ready.client_token, first_key, n).await;
    println!(
        "fixed rate: {rate}/s offered by {n} clients, {} s after {} s warm-up",
        args.seconds, args.warmup
    );
    let period = Duration::from_secs_f64(n as f64 / rate as f64);
    let base = Instant::now() + Duration::from_millis(50);
    let from = base + Duration::from_secs(args.warmup);
    let measured = Window {
        from,
        to: from + Duration::from_secs(args.seconds),
    };
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            // Spread the clients' schedules over one period.
            let schedule = Schedule {
                base,
                first: base + period.mul_f64(i as f64 / n as f64),
                period,
                end: measured.to,
                measured,
            };
            tokio::spawn(peers::run_fixed_rate(ws, ready.resource, schedule))
        })
        .collect();
    tokio::time::sleep_until(measured.from.into()).await;
    let cpu = CpuWindow::start(pid);
    tokio::time::sleep_until(measured.to.into()).await;
    let cpu = cpu.finish();
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.unwrap());
    }
    if args.timeline {
        timeline(&runs);
    }
    let (answered, p99) = report(&format!("fixed rate {rate}/s"), runs, args.seconds, cpu);
    samples::record(&format!("p99_ms_at_{rate}"), VARIANT, "ms", p99);
    samples::record(
        &format!("answered_at_{rate}"),
        VARIANT,
        "authorisations/s",
        answered,
    );
}

fn percentiles(v: &mut [u32], ps: &[f64]) -> Vec<f64> {
    v.sort_unstable();
    ps.iter()
        .map(|p| {
            if v.is_empty() {
                return f64::NAN;
            }
            v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
        })
        .collect()
}

/// p50/p99/max per second of scheduled time: shows whether a tail comes
/// from a standing queue or from stalls.
fn timeline(runs: &[ClientRun]) {
    let mut by_second: Vec<Vec<u32>> = Vec::new();
    for r in runs {
        for (&lat, &at) in r.latencies.iter().zip(&r.scheduled_ms) {
            let s = (at / 1000) as usize;
            if by_second.len() <= s {
                by_second.resize(s + 1, Vec::new());
            }
            by_second[s].push(lat);
        }
    }
    for (s, lat) in by_second.iter_mut().enumerate() {
        let p = percentiles(lat, &[0.5, 0.99, 1.0]);
        println!(
            "  second {s:>3}: {:>6} answers, p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms",
            lat.len(),
            p[0],
            p[1],
            p[2]
        );
    }
}

/// Prints a phase's figures; returns (answers per second, p99 ms).
fn report(phase: &str, runs: Vec<ClientRun>, seconds: u64, cpu: CpuUse) -> (f64, f64) {
    let offered: u64 = runs.iter().map(|r| r.offered).sum();
    let failed: u64 = runs.iter().map(|r| r.failed).sum();
    let mut lat: Vec<u32> = runs
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    let mut lag: Vec<u32> = runs
        .iter()
        .flat_map(|r| r.send_lag.iter().copied())
        .collect();
    let answered = lat.len() as u64;
    let s = seconds as f64;
    let p = percentiles(&mut lat, &[0.5, 0.9, 0.99, 0.999, 1.0]);
    println!(
        "{phase}: offered {offered} ({:.0}/s), flow_created {answered} ({:.0}/s), failed {failed}, unanswered {}",
        offered as f64 / s,
        answered as f64 / s,
        offered - answered - failed,
    );
    println!(
        "  latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        p[0], p[1], p[2], p[3], p[4]
    );
    if !lag.is_empty() {
        let l = percentiles(&mut lag, &[0.5, 0.99, 1.0]);
        println!(
            "  generator send lag (in the latency above) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l[0], l[1], l[2]
        );
    }
    println!("  {cpu}");
    (answered as f64 / s, p[2])
}

async fn idle(ready: &Ready, pid: u32, n: usize) {
    let before = proc_stats::rss_mib(pid);
    let t0 = Instant::now();
    let held = peers::connect_clients(ready.addr, &ready.client_token, 5_000_000, n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_stats::rss_mib(pid);
    println!(
        "idle: {} clients connected in {:.1} s; portal RSS {before:.0} MiB before, {after:.0} MiB with them ({:.1} KiB per client)",
        held.len(),
        t0.elapsed().as_secs_f64(),
        (after - before) * 1024.0 / n as f64
    );
    samples::record(
        &format!("rss_mib_idle_{}", held.len()),
        VARIANT,
        "MiB",
        after,
    );
    drop(held);
}
