//! Holds the gateway's eBPF policy filter on an interface for the VM
//! benchmark `backend-throughput` (xtask/src/vm/scenarios.rs): attaches it
//! to `--interface`'s ingress, installs `--authorizations` entries of which
//! one admits `--client`'s traffic to `--dst` (the others are other
//! clients, as a busy gateway holds them), prints
//!
//! ```text
//! ready authorizations=N load_ms=M
//! ```
//!
//! and keeps the filter until end of input. It then prints what the filter
//! saw and did, and detaches it (by drop):
//!
//! ```text
//! counters allowed=A total=T
//! prog run_ns=T runs=R        (when kernel.bpf_stats_enabled is 1)
//! ```
//!
//! Built static by the scenario's extras; it needs root and bpffs.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use clap::Parser;
use ipnet::IpNet;
use keyhole_gateway::policy::{
    Authorization, AuthorizationId, PolicyFilter, PortRange, Protocol, Verdict,
};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    interface: String,
    /// Entries installed in all (one of them admits the benchmark's flow).
    #[arg(long, default_value_t = 100_000)]
    authorizations: u32,
    /// The benchmark client's tunnel address.
    #[arg(long)]
    client: Ipv4Addr,
    /// Where the client may go (any protocol).
    #[arg(long)]
    dst: IpNet,
    /// bpffs directory for the filter's pin.
    #[arg(long, default_value = keyhole_gateway::policy::DEFAULT_PIN_DIR)]
    pin_dir: std::path::PathBuf,
}

/// The benchmark flow's entry, then `n - 1` others: other clients
/// (100.65.x.y) with host and network destinations, TCP and UDP ports.
fn authorizations(args: &Args) -> impl Iterator<Item = Authorization> + '_ {
    let ours = Authorization {
        id: AuthorizationId(1),
        client_ip: IpAddr::V4(args.client),
        dst: args.dst,
        proto: Protocol::Any,
        ports: PortRange::ALL,
    };
    let base = u32::from(Ipv4Addr::new(100, 65, 0, 0));
    let others = (1..args.authorizations).map(move |i| Authorization {
        id: AuthorizationId(1000 + u128::from(i)),
        client_ip: IpAddr::V4(Ipv4Addr::from(base + i)),
        dst: if i % 2 == 0 {
            args.dst.trunc()
        } else {
            args.dst
        },
        proto: if i % 2 == 0 {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        ports: PortRange::single(8000 + (i % 1000) as u16),
    });
    std::iter::once(ours).chain(others)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.authorizations >= 1,
        "--authorizations must be at least 1"
    );
    // As filter_cost sizes it: 131,072 for 100k.
    let capacity = args
        .authorizations
        .checked_next_power_of_two()
        .unwrap_or(args.authorizations)
        .max(1024);
    let mut filter = PolicyFilter::attach_pinned(&args.interface, capacity, &args.pin_dir)
        .with_context(|| format!("attaching the filter to {}", args.interface))?;
    let start = Instant::now();
    for auth in authorizations(&args) {
        filter.add_authorization(auth)?;
    }
    println!(
        "ready authorizations={} load_ms={}",
        filter.table().len(),
        start.elapsed().as_millis()
    );

    // Until the script closes our stdin.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;

    let c = filter.counters()?;
    println!(
        "counters allowed={} total={}",
        c.get(Verdict::Allowed),
        c.total()
    );
    if let Some(info) = filter.program_info() {
        let runs = info.run_count();
        if runs > 0 {
            println!("prog run_ns={} runs={runs}", info.run_time().as_nanos());
        }
    }
    Ok(())
}
