//! Prints the harness's own costs: namespace set-up/tear-down, command
//! round trips, and what a `tun_pipe` carries (ping RTT, iperf3 TCP).
//! Run as root: `cargo run -p keyhole-tests-netns --example harness_figures`.

use std::time::{Duration, Instant};

use anyhow::Result;
use keyhole_tests_netns::{Netns, Tun, tun_pipe, wait_for_tcp_port};

fn main() -> Result<()> {
    let n = 20;
    let start = Instant::now();
    for _ in 0..n {
        drop(Netns::new("figure")?);
    }
    println!("Netns::new + drop: {:?} each", start.elapsed() / n);

    let client = Netns::new("fclient")?;
    let gateway = Netns::new("fgateway")?;
    let start = Instant::now();
    for _ in 0..n {
        client.run("true", [""; 0])?;
    }
    println!("ns.run(\"true\"): {:?} each", start.elapsed() / n);
    let start = Instant::now();
    for _ in 0..n {
        client.ip(["link", "show", "lo"])?;
    }
    println!("ns.ip(link show lo): {:?} each", start.elapsed() / n);

    let ctun = Tun::create(&client, "tun0", &["100.64.0.2/32"])?;
    let gtun = Tun::create(&gateway, "tun0", &["100.64.0.1/32"])?;
    client.add_route_dev("100.64.0.0/24", "tun0")?;
    gateway.add_route_dev("100.64.0.0/24", "tun0")?;
    let pipe = tun_pipe(ctun, gtun);
    client.ping("100.64.0.1".parse()?, Duration::from_secs(5))?;
    let rtts: Vec<Duration> = (0..n)
        .map(|_| client.ping("100.64.0.1".parse()?, Duration::from_secs(5)))
        .collect::<Result<_>>()?;
    println!(
        "ping RTT through tun_pipe: min {:?}, max {:?}",
        rtts.iter().min().unwrap(),
        rtts.iter().max().unwrap()
    );

    let _server = gateway.spawn("iperf3", ["-s", "-B", "100.64.0.1"])?;
    wait_for_tcp_port(&gateway, "100.64.0.1:5201".parse()?, Duration::from_secs(5))?;
    let out = client.run("iperf3", ["-c", "100.64.0.1", "-t", "3", "-f", "m"])?;
    let summary = out
        .lines()
        .filter(|l| l.contains("receiver"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("iperf3 TCP through tun_pipe:\n{summary}");
    println!("{:?}", pipe.stats());
    Ok(())
}
