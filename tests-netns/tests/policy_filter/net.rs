//! The topology of the policy filter tests, the recording servers, and the
//! client-side probes with their nft packet counters.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyhole_gateway::policy::PolicyFilter;
use keyhole_tests_netns::{Netns, PipeHandle, Tun, tun_pipe, veth};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

/// Client tunnel addresses.
pub const A: &str = "100.64.0.2";
pub const B: &str = "100.64.0.3";
pub const A6: &str = "fd00:64::2";
pub const B6: &str = "fd00:64::3";
/// Resource addresses.
pub const R2: &str = "10.0.1.2";
pub const R3: &str = "10.0.1.3";
pub const R2_6: &str = "fd00:1::2";
pub const R3_6: &str = "fd00:1::3";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// client ns --tc0~(tun_pipe)~tg0-- gateway ns (filter on tg0 ingress)
/// --eth0 veth-- resource ns.
pub struct Topology {
    // Field order is drop order: detach the filter before the devices go.
    pub filter: PolicyFilter,
    pub pipe: Option<PipeHandle>,
    pub resource: Netns,
    pub gateway: Netns,
    pub client: Netns,
}

impl Topology {
    /// Builds the namespaces; with `pipe` the client's TUN is joined to the
    /// gateway's, otherwise the gateway's TUN is returned for hand-written
    /// packets.
    pub fn new(pipe: bool, capacity: u32) -> Result<(Topology, Option<Tun>)> {
        let client = Netns::new("pf-cli")?;
        let gateway = Netns::new("pf-gw")?;
        let resource = Netns::new("pf-res")?;

        // Count what each probe sends; drop the kernel's own IPv6 chatter
        // (MLD, router solicitations from :: or fe80::/10) so every packet
        // reaching the filter is one a probe sent.
        client.run_with_stdin(
            "nft",
            ["-f", "-"],
            br#"table inet obs {
                counter noise {}
                chain out {
                    type filter hook output priority 0; policy accept;
                    oifname "tc0" ip6 saddr { ::, fe80::/10 } counter name noise drop
                }
            }"#,
        )?;
        let tc0 = Tun::create(
            &client,
            "tc0",
            &[
                &format!("{A}/32"),
                &format!("{B}/32"),
                &format!("{A6}/128"),
                &format!("{B6}/128"),
            ],
        )?;
        client.add_route_dev("10.0.1.0/24", "tc0")?;
        client.add_route_dev("fd00:1::/64", "tc0")?;

        let tg0 = Tun::create(&gateway, "tg0", &["100.64.0.1/32", "fd00:64::1/128"])?;
        gateway.add_route_dev("100.64.0.0/10", "tg0")?;
        gateway.add_route_dev("fd00:64::/64", "tg0")?;
        veth(
            &gateway,
            "eth0",
            "10.0.1.1/24",
            &resource,
            "eth0",
            &format!("{R2}/24"),
        )?;
        gateway.add_addr("eth0", "fd00:1::1/64")?;
        resource.add_addr("eth0", &format!("{R3}/24"))?;
        resource.add_addr("eth0", &format!("{R2_6}/64"))?;
        resource.add_addr("eth0", &format!("{R3_6}/64"))?;
        resource.default_route("10.0.1.1")?;
        resource.default_route("fd00:1::1")?;
        gateway.enable_forwarding()?;
        // Resolve neighbours on the veth both ways (and let IPv6 settle), so
        // the first packets through the filter don't race link set-up.
        let t = Duration::from_secs(5);
        resource.ping(ip("10.0.1.1"), t)?;
        resource.ping(ip("fd00:1::1"), t)?;
        gateway.ping(ip(R2_6), t)?;
        gateway.ping(ip(R3_6), t)?;

        let filter = gateway
            .enter(|| PolicyFilter::attach_with_capacity("tg0", capacity))
            .context("attach the policy filter to tg0")?;
        let (pipe, tg0) = if pipe {
            (Some(tun_pipe(tc0, tg0)), None)
        } else {
            (None, Some(tg0))
        };
        Ok((
            Topology {
                filter,
                pipe,
                resource,
                gateway,
                client,
            },
            tg0,
        ))
    }

    /// Packets copied from the client into the gateway so far.
    pub fn piped(&self) -> u64 {
        self.pipe.as_ref().map_or(0, |p| p.stats().a_to_b_packets)
    }

    /// Waits until every packet piped into tg0 has a verdict and nothing
    /// has moved for a moment (TCP teardown ends asynchronously).
    pub fn settle(&self, piped_before: u64, total_before: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = (u64::MAX, u64::MAX);
        let mut stable_since = Instant::now();
        loop {
            let now = (
                self.piped() - piped_before,
                self.filter.counters()?.total() - total_before,
            );
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if now.0 == now.1 && stable_since.elapsed() > Duration::from_millis(300) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "traffic did not settle: piped {} but {} verdicts",
                    now.0,
                    now.1
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Something a server in the resource namespace received.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival {
    pub proto: &'static str,
    pub from: IpAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// TCP echo and UDP sink servers, each bound to one address and port.
pub struct Servers {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(
        ns: &Netns,
        addrs: &[&str],
        tcp_ports: &[u16],
        udp_ports: &[u16],
    ) -> Result<Servers> {
        let (listeners, sockets) = ns.enter(|| -> Result<_> {
            let mut listeners = Vec::new();
            let mut sockets = Vec::new();
            for addr in addrs {
                for port in tcp_ports {
                    let l = TcpListener::bind((ip(addr), *port))?;
                    l.set_nonblocking(true)?;
                    listeners.push(l);
                }
                for port in udp_ports {
                    let s = UdpSocket::bind((ip(addr), *port))?;
                    s.set_read_timeout(Some(Duration::from_millis(50)))?;
                    sockets.push(s);
                }
            }
            Ok((listeners, sockets))
        })?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for l in listeners {
            let (arrivals, stop) = (arrivals.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                tcp_echo_server(l, &arrivals, &stop)
            }));
        }
        for s in sockets {
            let (arrivals, stop) = (arrivals.clone(), stop.clone());
            threads.push(std::thread::spawn(move || udp_sink(s, &arrivals, &stop)));
        }
        Ok(Servers {
            arrivals,
            stop,
            threads,
        })
    }

    /// What arrived since the last call, sorted.
    pub fn take(&self) -> Vec<Arrival> {
        let mut got = std::mem::take(&mut *self.arrivals.lock().unwrap());
        got.sort();
        got
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_echo_server(l: TcpListener, arrivals: &Mutex<Vec<Arrival>>, stop: &AtomicBool) {
    let to = l.local_addr().unwrap();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut conn, from)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).unwrap_or(0);
                arrivals.lock().unwrap().push(Arrival {
                    proto: "tcp",
                    from: from.ip(),
                    to,
                    payload: buf[..n].to_vec(),
                });
                let _ = conn.write_all(&buf[..n]);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn udp_sink(s: UdpSocket, arrivals: &Mutex<Vec<Arrival>>, stop: &AtomicBool) {
    let to = s.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            arrivals.lock().unwrap().push(Arrival {
                proto: "udp",
                from: from.ip(),
                to,
                payload: buf[..n].to_vec(),
            });
        }
    }
}

/// TCP from `src` to `dst`: connect (within `connect_secs`), send `payload`, read the echo
/// to EOF, close. Returns the echo.
pub fn tcp_echo(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    payload: &[u8],
    connect_secs: i64,
) -> Result<Vec<u8>> {
    ns.enter(|| -> Result<Vec<u8>> {
        let family = if src.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        // Linux bounds a blocking connect by the send timeout.
        setsockopt(&fd, sockopt::SendTimeout, &TimeVal::new(connect_secs, 0))?;
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(src, 0)),
        )?;
        connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))
            .with_context(|| format!("connect {src} -> {dst}"))?;
        let mut stream = TcpStream::from(fd);
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(payload)?;
        let mut echo = Vec::new();
        stream.read_to_end(&mut echo)?;
        Ok(echo)
    })
}

/// One UDP datagram from `src` to `dst`.
pub fn udp_send(ns: &Netns, src: IpAddr, dst: SocketAddr, payload: &[u8]) -> Result<()> {
    ns.enter(|| -> Result<()> {
        let s = UdpSocket::bind((src, 0))?;
        s.send_to(payload, dst)?;
        Ok(())
    })
}

/// `ping -c count` from `src`; whether any reply came.
pub fn ping(ns: &Netns, src: IpAddr, dst: IpAddr, count: u32) -> Result<bool> {
    let out = ns
        .command(
            "ping",
            [
                if dst.is_ipv4() { "-4" } else { "-6" },
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                &src.to_string(),
                &dst.to_string(),
            ],
        )
        .output()?;
    Ok(out.status.success())
}

/// A named nft counter in the client's `obs` table counting what leaves
/// tc0 matching `expr`.
pub fn add_counter(ns: &Netns, name: &str, expr: &str) -> Result<()> {
    ns.run("nft", ["add", "counter", "inet", "obs", name])?;
    let rule = format!("add rule inet obs out oifname \"tc0\" {expr} counter name {name}");
    ns.run("nft", rule.split_whitespace())?;
    Ok(())
}

/// (packets, bytes) of a named counter.
pub fn read_counter(ns: &Netns, name: &str) -> Result<(u64, u64)> {
    let out = ns.run("nft", ["list", "counter", "inet", "obs", name])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let field = |key: &str| -> Result<u64> {
        let i = words
            .iter()
            .position(|w| *w == key)
            .with_context(|| format!("no {key} in {out}"))?;
        Ok(words[i + 1].trim_end_matches(',').parse()?)
    };
    Ok((field("packets")?, field("bytes")?))
}
