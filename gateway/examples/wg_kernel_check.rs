//! Drives the kernel WireGuard backend for the VM scenario `kernel-wg-backend`
//! (xtask/src/vm/scenarios.rs): resolves `--backend`, creates the interface
//! through [`KernelWg`], then reads commands from stdin, one per line, and
//! answers each with `ok <command>` (or `err <command>: <why>`):
//!
//! - `peer PUBKEY PSK|- IPV4 IPV6 ENDPOINT|- KEEPALIVE|-`: upsert a peer
//! - `remove PUBKEY`
//! - `stats`: one `stat PUBKEY handshake=yes|no rx=N tx=N endpoint=E` per peer
//! - `bulk N`: time adding N peers in one batch, updating one of them, and
//!   removing them again (figures for "updates cost O(changed peers)")
//!
//! End of input tears the interface down (by drop) and prints `down`.
//! Built static by the scenario's extras; it needs root and kernel WireGuard.

use std::{
    io::{BufRead as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use ipnet::IpNet;
use keyhole_gateway::wg::{
    BackendChoice, BackendKind, InterfaceConfig, KernelWg, PeerConfig, PeerUpdate, PrivateKey,
    WgBackend, link, resolve,
};
use keyhole_proto::{PresharedKey, PublicKey, TunnelAddresses};

#[derive(Parser)]
struct Args {
    #[arg(long = "if")]
    name: String,
    /// File with the interface's private key (`wg genkey` output).
    #[arg(long)]
    key: std::path::PathBuf,
    #[arg(long)]
    port: u16,
    #[arg(long = "addr")]
    addresses: Vec<IpNet>,
    #[arg(long = "route")]
    routes: Vec<IpNet>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
}

fn opt(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

fn parse_peer(f: &[&str]) -> anyhow::Result<PeerConfig> {
    let [key, psk, v4, v6, ep, ka] = f else {
        bail!("usage: peer PUBKEY PSK|- IPV4 IPV6 ENDPOINT|- KEEPALIVE|-");
    };
    Ok(PeerConfig {
        public_key: key.parse()?,
        preshared_key: opt(psk).map(str::parse::<PresharedKey>).transpose()?,
        tunnel: TunnelAddresses::new(v4.parse()?, v6.parse()?).map_err(anyhow::Error::msg)?,
        endpoint: opt(ep).map(str::parse).transpose()?,
        keepalive: opt(ka).map(str::parse).transpose()?,
    })
}

/// N peers with random keys at 100.65.x.y / fd00:6b68:1::n.
fn synthetic_peers(n: u32) -> Vec<PeerConfig> {
    (0..n)
        .map(|i| PeerConfig {
            public_key: PrivateKey::generate().public_key(),
            preshared_key: Some(PresharedKey::from_bytes(*PrivateKey::generate().as_bytes())),
            tunnel: TunnelAddresses::new(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 65, 0, 1)) + i),
                Ipv6Addr::from(
                    u128::from(Ipv6Addr::new(0xfd00, 0x6b68, 1, 0, 0, 0, 0, 1)) + i as u128,
                ),
            )
            .expect("inside the tunnel ranges"),
            endpoint: Some(([192, 0, 2, 1], 40000 + (i % 20000) as u16).into()),
            keepalive: Some(25),
        })
        .collect()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn bulk(wg: &mut KernelWg, n: u32) -> anyhow::Result<String> {
    let mut peers = synthetic_peers(n);
    let t = Instant::now();
    let ups: Vec<_> = peers.iter().map(PeerUpdate::Upsert).collect();
    wg.apply(&ups)?;
    let add = ms(t);
    peers[0].keepalive = Some(10);
    let t = Instant::now();
    wg.upsert_peer(&peers[0])?;
    let one = ms(t);
    let t = Instant::now();
    let rm: Vec<_> = peers
        .iter()
        .map(|p| PeerUpdate::Remove(&p.public_key))
        .collect();
    wg.apply(&rm)?;
    let remove = ms(t);
    Ok(format!(
        "bulk n={n} add_batch_ms={add:.1} update_one_ms={one:.2} remove_batch_ms={remove:.1}"
    ))
}

fn handle(wg: &mut KernelWg, line: &str, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let f: Vec<&str> = line.split_whitespace().collect();
    match f.as_slice() {
        ["peer", rest @ ..] => {
            let p = parse_peer(rest)?;
            let t = Instant::now();
            wg.upsert_peer(&p)?;
            writeln!(out, "upsert_ms={:.2}", ms(t))?;
        }
        ["remove", key] => wg.remove_peer(&key.parse::<PublicKey>()?)?,
        ["stats"] => {
            for s in wg.peer_stats()? {
                let hs = if s.last_handshake.is_some() {
                    "yes"
                } else {
                    "no"
                };
                let ep = s.endpoint.map_or("-".into(), |e| e.to_string());
                writeln!(
                    out,
                    "stat {} handshake={hs} rx={} tx={} endpoint={ep}",
                    s.public_key, s.rx_bytes, s.tx_bytes
                )?;
            }
        }
        ["bulk", n] => writeln!(out, "{}", bulk(wg, n.parse()?)?)?,
        _ => bail!("unknown command"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut wg = rt.block_on(async {
        let h = link::connect()?;
        let kind = resolve(args.backend, &h).await?;
        println!("backend={}", kind.as_str());
        if kind != BackendKind::Kernel {
            bail!("this check needs the kernel backend");
        }
        let key = std::fs::read_to_string(&args.key).context("reading --key")?;
        let cfg = InterfaceConfig {
            name: args.name.clone(),
            private_key: PrivateKey::from_base64(&key)?,
            listen_port: args.port,
            addresses: args.addresses.clone(),
            routes: args.routes.clone(),
            mtu: None,
        };
        let t = Instant::now();
        let wg = KernelWg::create(&h, &cfg).await?;
        println!("create_ms={:.1}", ms(t));
        anyhow::Ok(wg)
    })?;
    println!("up {} public={}", wg.interface(), wg.public_key());
    let mut out = std::io::stdout().lock();
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let cmd = line.split_whitespace().next().unwrap_or("").to_owned();
        match handle(&mut wg, &line, &mut out) {
            Ok(()) => writeln!(out, "ok {cmd}")?,
            Err(e) => writeln!(out, "err {cmd}: {e:#}")?,
        }
        out.flush()?;
    }
    drop(wg);
    writeln!(out, "down")?;
    Ok(())
}
