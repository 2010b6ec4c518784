//! Benchmark (not a test): what the gateway's eBPF policy filter costs on
//! the forwarding path, with 100,000 authorisations installed vs. no
//! filter at all (issue #6's goal: at most 3 % lower rate).
//!
//! ```text
//!  src (TUN fs0, 100.64.0.1) ══ copy threads ══ (TUN fg0, filter on ingress) gw ── veth ── res
//!                                                                                   iperf3 -s
//! ```
//!
//! The client's packets reach the gateway on a TUN, an L3 device that
//! starts at the IP header like the WireGuard interface (this kernel has
//! no ipip/gre/WireGuard to do it at kernel speed), and the filter sits on
//! its ingress as the gateway attaches it. Each round runs iperf3 (TCP,
//! then UDP with 64-byte datagrams for packets/s) with no filter, then
//! with the filter holding 100k authorisations of which one admits the
//! traffic; rounds alternate; medians, spread and the ratio are printed.
//! Because the copy threads cost far more per packet than the filter, the
//! kernel's own accounting of the program (`kernel.bpf_stats_enabled`:
//! run time / run count) is printed too: the filter's cost per packet.
//!
//! `cargo run --release -p keyhole-tests-netns --example filter_cost [-- rounds secs authorisations]`
//! (root).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context as _, Result};
use keyhole_gateway::policy::{
    Authorization, AuthorizationId, PolicyFilter, PortRange, Protocol, Verdict,
};
use keyhole_tests_netns::bench_results::{Sample, record};
use keyhole_tests_netns::{Netns, PipeHandle, Tun, tun_pipe, veth, wait_for_tcp_port};
use serde_json::Value;

/// Authorisations installed by default (the third argument overrides).
const N: u32 = 100_000;

struct Net {
    src: Netns,
    gw: Netns,
    res: Netns,
    _pipe: PipeHandle,
}

fn build() -> Result<Net> {
    let src = Netns::new("fcsrc")?;
    let gw = Netns::new("fcgw")?;
    let res = Netns::new("fcres")?;
    veth(&gw, "eth1", "10.60.0.1/24", &res, "eth0", "10.60.0.2/24")?;
    for ns in [&src, &gw, &res] {
        ns.ip(["link", "set", "lo", "up"])?;
    }
    gw.sysctl("net.ipv4.ip_forward", "1")?;
    let fs0 = Tun::create(&src, "fs0", &["100.64.0.1/32"])?;
    src.ip([
        "route",
        "add",
        "10.60.0.0/24",
        "dev",
        "fs0",
        "src",
        "100.64.0.1",
    ])?;
    let fg0 = Tun::create(&gw, "fg0", &["100.64.0.254/32"])?;
    gw.ip(["route", "add", "100.64.0.0/16", "dev", "fg0"])?;
    res.ip(["route", "add", "100.64.0.0/16", "via", "10.60.0.1"])?;
    let pipe = tun_pipe(fs0, fg0);
    Ok(Net {
        src,
        gw,
        res,
        _pipe: pipe,
    })
}

/// (run time ns, run count) of a BPF program, from `bpftool`.
fn prog_stats(id: u32) -> Result<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .context("running bpftool")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("bpftool -j")?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

fn authorizations(n: u32) -> impl Iterator<Item = Authorization> {
    let ours = Authorization {
        id: AuthorizationId(1),
        client_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
        dst: "10.60.0.2/32".parse().expect("literal"),
        proto: Protocol::Any,
        ports: PortRange::ALL,
    };
    // The rest: other clients (100.65.x.y) with a mix of host and network
    // destinations, as a busy gateway would hold.
    let others = (1..n).map(|i| Authorization {
        id: AuthorizationId(1000 + u128::from(i)),
        client_ip: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 65, 0, 0)) + i)),
        dst: if i % 2 == 0 {
            "10.60.0.0/24"
        } else {
            "10.60.0.2/32"
        }
        .parse()
        .expect("literal"),
        proto: if i % 2 == 0 {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        ports: PortRange::single(8000 + (i % 1000) as u16),
    });
    std::iter::once(ours).chain(others)
}

/// One iperf3 run from src to res; (bits/s, packets/s).
fn iperf(net: &Net, udp: bool, secs: u32) -> Result<(f64, f64)> {
    let secs_s = secs.to_string();
    let mut args = vec!["-c", "10.60.0.2", "-B", "100.64.0.1", "-J", "-t", &secs_s];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    let out = net
        .src
        .run_timeout("iperf3", args, Duration::from_secs(u64::from(secs) + 30))?;
    let v: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let end = &v["end"];
    if udp {
        // What arrived: the receiver's view.
        let s = &end["sum_received"];
        let bps = s["bits_per_second"].as_f64().unwrap_or(0.0);
        let packets = s["packets"].as_f64().or_else(|| {
            let lost = end["sum"]["lost_packets"].as_f64()?;
            Some(end["sum"]["packets"].as_f64()? - lost)
        });
        let secs = s["seconds"].as_f64().unwrap_or(f64::from(secs));
        Ok((bps, packets.unwrap_or(0.0) / secs))
    } else {
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .context("no sum_received")?;
        Ok((bps, 0.0))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.3e}..{hi:.3e}")
}

fn main() -> Result<()> {
    keyhole_tests_netns::require_root();
    let mut a = std::env::args().skip(1);
    let rounds: usize = a.next().map_or(Ok(3), |s| s.parse())?;
    let secs: u32 = a.next().map_or(Ok(5), |s| s.parse())?;
    let n: u32 = a.next().map_or(Ok(N), |s| s.parse())?;
    let net = build()?;
    let _server = net.res.spawn("iperf3", ["-s", "-B", "10.60.0.2"])?;
    wait_for_tcp_port(&net.res, "10.60.0.2:5201".parse()?, Duration::from_secs(10))?;

    // The kernel's per-program run time accounting (global; restored).
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let mut ns_per_packet = Vec::new();
    let mut filter: Option<PolicyFilter> = None;
    let (mut tcp_off, mut tcp_on, mut pps_off, mut pps_on) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let with = format!("{n} authorisations");
    for round in 0..rounds {
        for on in [false, true] {
            if on {
                let f = net
                    .gw
                    .enter(|| PolicyFilter::attach_with_capacity("fg0", 131_072))
                    .context("attaching the filter to fg0")?;
                filter = Some(f);
                let f = filter.as_mut().expect("just set");
                // A fresh attachment has fresh maps: fill them each round.
                let start = std::time::Instant::now();
                for auth in authorizations(n) {
                    f.add_authorization(auth)?;
                }
                if round == 0 {
                    eprintln!("filter_cost: {n} authorisations in {:?}", start.elapsed());
                }
            } else {
                filter = None; // detached: no program on fg0
            }
            let (tcp, _) = iperf(&net, false, secs)?;
            let (_, pps) = iperf(&net, true, secs)?;
            eprintln!(
                "filter_cost: round {round} filter {}: TCP {:.2} Gbit/s, UDP 64 B {:.0} packets/s",
                if on { "on " } else { "off" },
                tcp / 1e9,
                pps
            );
            let variant = if on { with.as_str() } else { "no filter" };
            let r = round as u32 + 1;
            sample("tcp_gbps", variant, "Gbit/s", tcp / 1e9, r)?;
            sample("udp64_pps", variant, "packets/s", pps, r)?;
            if on {
                let f = filter.as_ref().expect("on");
                if let Some(info) = f.program_info() {
                    let (ns, runs) = prog_stats(info.id())?;
                    if runs > 0 {
                        ns_per_packet.push(ns as f64 / runs as f64);
                        sample("ns_per_packet", variant, "ns", ns as f64 / runs as f64, r)?;
                    }
                }
                let c = f.counters()?;
                anyhow::ensure!(
                    c.get(Verdict::Allowed) > 0,
                    "the filter admitted nothing: {c:?}"
                );
                tcp_on.push(tcp);
                pps_on.push(pps);
            } else {
                tcp_off.push(tcp);
                pps_off.push(pps);
            }
        }
    }
    drop(filter);
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    let (t0, t1, p0, p1) = (
        median(tcp_off.clone()),
        median(tcp_on.clone()),
        median(pps_off.clone()),
        median(pps_on.clone()),
    );
    println!("| forwarding through the gateway | no filter | filter, {n} authorisations | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| TCP (iperf3, median of {rounds}) | {:.2} Gbit/s ({}) | {:.2} Gbit/s ({}) | {:.3} |",
        t0 / 1e9,
        spread(&tcp_off),
        t1 / 1e9,
        spread(&tcp_on),
        t1 / t0
    );
    println!(
        "| UDP 64 B packets/s (median of {rounds}) | {p0:.0} ({}) | {p1:.0} ({}) | {:.3} |",
        spread(&pps_off),
        spread(&pps_on),
        p1 / p0
    );
    if !ns_per_packet.is_empty() {
        println!(
            "\nfilter run time per packet with {n} authorisations (kernel bpf_stats): \
             median {:.0} ns ({:.0}..{:.0})",
            median(ns_per_packet.clone()),
            ns_per_packet.iter().copied().fold(f64::INFINITY, f64::min),
            ns_per_packet.iter().copied().fold(0.0, f64::max)
        );
    }
    Ok(())
}

/// One sample for `cargo xtask bench` (see `bench_results`).
fn sample(metric: &str, variant: &str, unit: &str, value: f64, round: u32) -> Result<()> {
    record(Sample {
        bench: "filter",
        metric,
        variant,
        unit,
        value,
        round,
    })
}
