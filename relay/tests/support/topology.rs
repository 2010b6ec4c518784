//! client ns — relay ns — peer ns over two veth pairs, with a real
//! keyhole-relay (or coturn) in the middle.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keyhole_relay::xdp::{PassProgram, SinkProgram, XdpMode};
use keyhole_tests_netns::{Netns, Proc, veth};

pub const SECRET: &str = "xdp-test-secret";
pub const REALM: &str = "keyhole.test";
pub const CLIENT_IP: &str = "10.77.1.2";
pub const RELAY_CLIENT_SIDE: &str = "10.77.1.1";
pub const RELAY_PEER_SIDE: &str = "10.77.2.1";
pub const PEER_IP: &str = "10.77.2.2";
pub const LISTEN: &str = "10.77.1.1:3478";
pub const METRICS: &str = "10.77.1.1:9108";

pub struct Topology {
    pub client: Netns,
    pub relay: Netns,
    pub peer: Netns,
    // Native XDP on a veth only receives XDP_TX/redirected frames when its
    // own end runs an XDP program too.
    _pass: Vec<PassProgram>,
    /// Replaces the peer's pass program when a benchmark counts there.
    _sink: Option<SinkProgram>,
}

impl Topology {
    pub fn new() -> anyhow::Result<Self> {
        let client = Netns::new("xc")?;
        let relay = Netns::new("xr")?;
        let peer = Netns::new("xp")?;
        veth(
            &client,
            "eth0",
            &format!("{CLIENT_IP}/24"),
            &relay,
            "c0",
            &format!("{RELAY_CLIENT_SIDE}/24"),
        )?;
        veth(
            &peer,
            "eth0",
            &format!("{PEER_IP}/24"),
            &relay,
            "p0",
            &format!("{RELAY_PEER_SIDE}/24"),
        )?;
        client.default_route(RELAY_CLIENT_SIDE)?;
        peer.default_route(RELAY_PEER_SIDE)?;
        // bpf_fib_lookup only answers for interfaces with forwarding on.
        relay.enable_forwarding()?;
        let mut pass = Vec::new();
        for ns in [&client, &peer] {
            ns.enter(|| tx_checksum_off("eth0"))?;
            let (p, _) = ns.enter(|| PassProgram::attach("eth0", XdpMode::Native))?;
            pass.push(p);
        }
        // Resolve neighbours both ways so the first datagrams need no ARP.
        relay.ping(CLIENT_IP.parse()?, Duration::from_secs(5))?;
        relay.ping(PEER_IP.parse()?, Duration::from_secs(5))?;
        Ok(Topology {
            client,
            relay,
            peer,
            _pass: pass,
            _sink: None,
        })
    }

    /// Puts a counting, dropping sink on the peer's eth0 in place of its
    /// pass program, so no receiving stack limits what is measured.
    pub fn sink_at_peer(&mut self) -> anyhow::Result<()> {
        self.sink_on(1)
    }

    /// As [`sink_at_peer`](Self::sink_at_peer), on the client's eth0.
    pub fn sink_at_client(&mut self) -> anyhow::Result<()> {
        self.sink_on(0)
    }

    /// The pass programs went on in [client, peer] order: `side` indexes it.
    fn sink_on(&mut self, side: usize) -> anyhow::Result<()> {
        self._pass.remove(side);
        let ns = if side == 0 { &self.client } else { &self.peer };
        let (sink, _) = ns.enter(|| SinkProgram::attach("eth0", XdpMode::Native))?;
        self._sink = Some(sink);
        Ok(())
    }

    /// The sink [`sink_at_peer`](Self::sink_at_peer) attached.
    pub fn sink(&self) -> Option<&SinkProgram> {
        self._sink.as_ref()
    }

    /// Starts keyhole-relay in the relay namespace with `--xdp-mode mode`.
    pub fn start_keyhole(&self, mode: &str) -> anyhow::Result<Proc> {
        self.start_keyhole_on(mode, None)
    }

    /// As [`start_keyhole`](Self::start_keyhole), pinned to `cpu` if given.
    pub fn start_keyhole_on(&self, mode: &str, cpu: Option<usize>) -> anyhow::Result<Proc> {
        self.start_keyhole_with(mode, cpu, &[])
    }

    /// As [`start_keyhole_on`](Self::start_keyhole_on), with `extra` options.
    pub fn start_keyhole_with(
        &self,
        mode: &str,
        cpu: Option<usize>,
        extra: &[&str],
    ) -> anyhow::Result<Proc> {
        self.start_keyhole_listening(LISTEN, "c0,p0", mode, cpu, extra)
    }

    /// As [`start_keyhole_with`](Self::start_keyhole_with), listening on
    /// `listen`, the fast path on `ifaces`.
    pub fn start_keyhole_listening(
        &self,
        listen: &str,
        ifaces: &str,
        mode: &str,
        cpu: Option<usize>,
        extra: &[&str],
    ) -> anyhow::Result<Proc> {
        let mut args = vec![
            "--listen",
            listen,
            "--static-auth-secret",
            SECRET,
            "--realm",
            REALM,
            "--min-port",
            "50000",
            "--max-port",
            "50999",
            "--no-tcp",
            "--xdp-iface",
            ifaces,
            "--xdp-mode",
            mode,
            "--metrics-listen",
            METRICS,
        ];
        args.extend_from_slice(extra);
        let relay = self.spawn_on(cpu, env!("CARGO_BIN_EXE_keyhole-relay"), &args)?;
        relay
            .wait_for_output("keyhole-relay listening", Duration::from_secs(10))
            .with_context(|| relay.output_so_far())?;
        Ok(relay)
    }

    /// Starts coturn's turnserver in the relay namespace.
    pub fn start_coturn(&self, cpu: Option<usize>) -> anyhow::Result<Proc> {
        let p = self.spawn_on(
            cpu,
            "turnserver",
            &[
                "-n",
                "--listening-ip",
                RELAY_CLIENT_SIDE,
                "--listening-port",
                "3478",
                "--relay-ip",
                RELAY_CLIENT_SIDE,
                "--min-port",
                "50000",
                "--max-port",
                "50999",
                "--use-auth-secret",
                "--static-auth-secret",
                SECRET,
                "--realm",
                REALM,
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
                "--log-file",
                "stdout",
            ],
        )?;
        std::thread::sleep(Duration::from_millis(700));
        Ok(p)
    }

    /// Spawns `program` in the relay namespace, under `taskset` if pinned.
    fn spawn_on(&self, cpu: Option<usize>, program: &str, args: &[&str]) -> anyhow::Result<Proc> {
        match cpu {
            Some(cpu) => {
                let cpu = cpu.to_string();
                let mut all = vec!["-c", cpu.as_str(), program];
                all.extend_from_slice(args);
                self.relay.spawn("taskset", all)
            }
            None => self.relay.spawn(program, args.iter().copied()),
        }
    }

    /// GET /metrics from inside the relay namespace, parsed into
    /// `name{labels}` → value.
    pub fn metrics(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let addr: SocketAddr = METRICS.parse()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            match self.relay.enter(|| fetch(addr)) {
                Ok(t) => break t,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line.rsplit_once(' ').context("metric line")?;
            out.insert(name.to_string(), value.parse()?);
        }
        Ok(out)
    }
}

fn fetch(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let Some((head, body)) = body.split_once("\r\n\r\n") else {
        bail!("bad HTTP response");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics: {head}");
    }
    Ok(body.to_string())
}

/// `after - before` for one metric (missing counts as 0).
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

/// Turns off TX checksum offload on `dev` (as `ethtool -K dev tx off`,
/// which is not installed here), in the calling thread's namespace.
///
/// A local socket sending over a veth leaves only the pseudo-header sum in
/// the UDP checksum field (CHECKSUM_PARTIAL); a real NIC puts the full
/// checksum on the wire. XDP cannot tell the two apart, and an incremental
/// update of a partial checksum is garbage, so the endpoints here must send
/// what a wire would carry.
pub fn tx_checksum_off(dev: &str) -> anyhow::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: (&mut value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    if dev.len() >= 16 {
        bail!("interface name too long: {dev}");
    }
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: plain socket + ioctl with a properly sized ifreq whose data
    // pointer outlives the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(anyhow::Error::from(err).context(format!("ETHTOOL_STXCSUM off on {dev}")));
        }
    }
    Ok(())
}
