//! The real client end to end: a real `keyhole-portal` (SQLite in a temp
//! dir) configured over its REST API, the real `keyhole-gateway`
//! (userspace backend) and the real `keyhole up` in its own namespace.
//! The first packet to a resource makes the client ask for a flow, build
//! the tunnel and deliver it; an address without a policy gets nothing;
//! `keyhole status` shows the connection; the DNS stub answers a DNS
//! resource's name with a proxy IP that reaches the name's address through
//! the gateway and passes other names upstream; tunnels survive the
//! portal's death; deleting a policy removes the route; `keyhole down`
//! removes TUN and routes and restores the resolver file, also after a
//! SIGKILL.
//!
//! ```text
//!  client 10.10.0.1 ── 10.10.0.2 gateway+portal 10.20.0.1 ── 10.20.0.10/.11/.12/.53 res
//!                      (+ upstream DNS :53)                   (.53: the site's DNS)
//! ```
//!
//! Needs root and the binaries: `cargo build -p keyhole-portal -p
//! keyhole-gateway -p keyhole-client` (or KEYHOLE_PORTAL_BIN,
//! KEYHOLE_GATEWAY_BIN, KEYHOLE_CLIENT_BIN).

#[path = "tunnel_common.rs"]
mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use keyhole_tests_netns::{Netns, Proc, veth};
use nix::sys::signal::Signal;
use serde_json::Value;

const PORTAL: &str = "10.10.0.2:18080";

/// `curl` against the portal's REST API from inside `ns`.
fn api(ns: &Netns, admin: &str, method: &str, path: &str, body: &str) -> Value {
    let out = ns
        .run(
            "curl",
            [
                "-sS",
                "--fail-with-body",
                "-X",
                method,
                "-H",
                &format!("Authorization: Bearer {admin}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("http://{PORTAL}/api/v1{path}"),
            ],
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

fn client_bin() -> PathBuf {
    built_binary(
        "keyhole",
        Some("KEYHOLE_CLIENT_BIN"),
        "`cargo build -p keyhole-client`",
    )
}

/// A `keyhole` command in `ns` with its state and runtime dirs under `dir`.
fn keyhole(ns: &Netns, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = ns.command(client_bin().to_str().unwrap(), args);
    cmd.env("KEYHOLE_STATE_DIR", dir.join("state"))
        .env("KEYHOLE_RUNTIME_DIR", dir.join("run"));
    cmd
}

fn keyhole_run(ns: &Netns, dir: &Path, args: &[&str]) -> String {
    let out = keyhole(ns, dir, args).output().unwrap();
    assert!(
        out.status.success(),
        "keyhole {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn_up(ns: &Netns, dir: &Path, token: &str) -> Proc {
    let mut cmd = keyhole(
        ns,
        dir,
        &[
            "up",
            "--portal-url",
            &format!("http://{PORTAL}"),
            "--tun-name",
            "kh0",
            "--advertise",
            "10.10.0.1",
            // Never the host's own file.
            "--resolv-conf",
            dir.join("resolv.conf").to_str().unwrap(),
        ],
    );
    cmd.env("KEYHOLE_TOKEN", token);
    ns.spawn_command(cmd).unwrap()
}

/// Packets to TCP port 7001 the resource host saw.
fn dport_7001(res: &Netns) -> u64 {
    let out = res
        .run("nft", ["list", "chain", "inet", "probe", "input"])
        .unwrap();
    let line = out.lines().find(|l| l.contains("tcp dport 7001")).unwrap();
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets");
    words.next().unwrap().parse().unwrap()
}

/// A minimal authoritative DNS server in `ns`: A records only, NXDOMAIN
/// for unknown names.
struct DnsServer {
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    fn start(ns: &Netns, addr: SocketAddr, records: &[(&str, Ipv4Addr)]) -> DnsServer {
        let sock = ns.enter(|| UdpSocket::bind(addr)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let records: HashMap<String, Ipv4Addr> =
            records.iter().map(|(n, i)| (n.to_string(), *i)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_answer(&buf[..n], &records) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        DnsServer { stop }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn qname(q: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    Some((labels.join("."), i))
}

fn dns_answer(q: &[u8], records: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let (name, i) = qname(q)?;
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let record = records.get(&name).copied();
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]);
    r.extend_from_slice(&[0x84 | (q[2] & 0x01), if record.is_some() { 0 } else { 3 }]);
    let an = u16::from(record.is_some() && qtype == 1);
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&an.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..i + 4)?);
    if let (Some(ip), 1) = (record, qtype) {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// Asks `server` for `name`'s A record from inside `ns`.
fn resolve(ns: &Netns, server: &str, name: &str) -> Option<Ipv4Addr> {
    let mut q = vec![0x4b, 0x48, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = ns.enter(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&q, server).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let r = &buf[..n];
    assert_eq!(&r[..2], &q[..2], "transaction id");
    let answers = u16::from_be_bytes([r[6], r[7]]);
    (answers > 0).then(|| Ipv4Addr::new(r[n - 4], r[n - 3], r[n - 2], r[n - 1]))
}

fn routes(ns: &Netns) -> String {
    ns.ip(["route", "show"]).unwrap()
}

#[test]
fn keyhole_up_reaches_only_authorised_resources_and_down_cleans_up() {
    let client = Netns::new("kcc").unwrap();
    let gw = Netns::new("kcg").unwrap();
    let res = Netns::new("kcr").unwrap();
    veth(&client, "eth0", "10.10.0.1/24", &gw, "eth0", "10.10.0.2/24").unwrap();
    veth(&gw, "eth1", "10.20.0.1/24", &res, "eth0", "10.20.0.10/24").unwrap();
    res.add_addr("eth0", "10.20.0.11/24").unwrap();
    res.add_addr("eth0", "10.20.0.12/24").unwrap();
    res.run_with_stdin(
        "nft",
        ["-f", "-"],
        b"table inet probe {\n chain input {\n type filter hook input priority 0;\n \
          ip daddr 10.20.0.10 counter\n ip daddr 10.20.0.11 counter\n \
          ip daddr 10.20.0.12 counter\n tcp dport 7001 counter\n }\n}\n",
    )
    .unwrap();
    gw.ip(["link", "set", "lo", "up"]).unwrap();
    client.ip(["link", "set", "lo", "up"]).unwrap();

    let dir = std::env::temp_dir().join(format!("keyhole-cle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("portal");

    // The portal, in the gateway's namespace, reachable from the client.
    let portal_bin = built_binary(
        "keyhole-portal",
        Some("KEYHOLE_PORTAL_BIN"),
        "`cargo build -p keyhole-portal`",
    );
    let mut portal: Proc = gw
        .spawn(
            portal_bin.to_str().unwrap(),
            [
                "--listen",
                PORTAL,
                "--data-dir",
                data.to_str().unwrap(),
                "--admin-email",
                "admin@example.com",
                "--admin-password",
                "correct horse battery staple",
            ]
            .map(String::from),
        )
        .unwrap();
    portal
        .wait_for_output("listening on", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", portal.output_so_far()));
    let out = portal.stdout_so_far();
    let admin = out
        .lines()
        .find_map(|l| l.split("store it now): ").nth(1))
        .expect("admin token printed")
        .trim()
        .to_owned();
    let site = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("default site: default ("))
        .and_then(|s| s.strip_suffix(')'))
        .expect("default site printed")
        .to_owned();

    let site_token = api(&gw, &admin, "POST", &format!("/sites/{site}/tokens"), "{}")["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r_ok = id(&api(
        &gw,
        &admin,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"web","address":{{"kind":"ip","ip":"10.20.0.10"}},
               "filters":[{{"protocol":"icmp"}},{{"protocol":"tcp","ports":{{"start":7000,"end":7000}}}}],
               "site_ids":["{site}"]}}"#
        ),
    ));
    api(
        &gw,
        &admin,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"other","address":{{"kind":"ip","ip":"10.20.0.11"}},"site_ids":["{site}"]}}"#
        ),
    );
    let sa = id(&api(
        &gw,
        &admin,
        "POST",
        "/service-accounts",
        r#"{"name":"laptop"}"#,
    ));
    let sa_token = api(
        &gw,
        &admin,
        "POST",
        &format!("/service-accounts/{sa}/tokens"),
        "{}",
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = id(&api(&gw, &admin, "POST", "/groups", r#"{"name":"eng"}"#));
    api(
        &gw,
        &admin,
        "POST",
        &format!("/groups/{group}/members"),
        &format!(r#"{{"kind":"service_account","id":"{sa}"}}"#),
    );
    let policy = id(&api(
        &gw,
        &admin,
        "POST",
        "/policies",
        &format!(r#"{{"group_id":"{group}","resource_id":"{r_ok}"}}"#),
    ));
    let r_wiki = id(&api(
        &gw,
        &admin,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"wiki","address":{{"kind":"dns","pattern":"wiki.corp"}},"site_ids":["{site}"]}}"#
        ),
    ));
    api(
        &gw,
        &admin,
        "POST",
        "/policies",
        &format!(r#"{{"group_id":"{group}","resource_id":"{r_wiki}"}}"#),
    );
    // The site's DNS (the gateway resolves wiki.corp there) and the
    // client's own upstream resolver.
    res.add_addr("eth0", "10.20.0.53/24").unwrap();
    let _site_dns = DnsServer::start(
        &res,
        "10.20.0.53:53".parse().unwrap(),
        &[
            ("wiki.corp", Ipv4Addr::new(10, 20, 0, 12)),
            ("api.eu.apps.corp", Ipv4Addr::new(10, 20, 0, 12)),
        ],
    );
    let _isp_dns = DnsServer::start(
        &gw,
        "10.10.0.2:53".parse().unwrap(),
        &[("plain.example", Ipv4Addr::new(192, 0, 2, 7))],
    );
    let resolv_conf = dir.join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 10.10.0.2\n").unwrap();

    let mut cmd = gw.command(
        built_binary(
            "keyhole-gateway",
            Some("KEYHOLE_GATEWAY_BIN"),
            "`cargo build -p keyhole-gateway`",
        )
        .to_str()
        .unwrap(),
        [
            "--portal-url",
            &format!("http://{PORTAL}"),
            "--backend",
            "userspace",
            "--interface",
            "kh-gw",
            "--advertise",
            "10.10.0.2",
            "--dns-server",
            "10.20.0.53:53",
            "--state-dir",
            dir.join("gateway").to_str().unwrap(),
        ]
        .map(String::from),
    );
    cmd.env("KEYHOLE_TOKEN", &site_token);
    let gateway = gw.spawn_command(cmd).unwrap();
    gateway
        .wait_for_output("tunnel addresses set", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.output_so_far()));

    // The real client.
    let mut up = spawn_up(&client, &dir, &sa_token);
    up.wait_for_output("route added", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", up.output_so_far()));
    let start = Instant::now();
    loop {
        let r = routes(&client);
        if r.contains("10.20.0.10 dev kh0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no resource routes:\n{r}\n{}",
            up.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !routes(&client).contains("10.20.0.12"),
        "{}",
        routes(&client)
    );
    let key = dir.join("state/private_key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions())
            & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(
        !up.output_so_far().contains(key_text.trim()),
        "private key logged"
    );

    // A second `up` next to the running one refuses and touches nothing.
    let mut second = keyhole(
        &client,
        &dir,
        &[
            "up",
            "--portal-url",
            &format!("http://{PORTAL}"),
            "--tun-name",
            "kh0",
            "--resolv-conf",
            dir.join("resolv.conf").to_str().unwrap(),
        ],
    );
    let out = second.env("KEYHOLE_TOKEN", &sa_token).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(client.ip(["link", "show", "kh0"]).is_ok());

    // The first packet: buffered, flow requested, tunnel built, delivered.
    let first = Instant::now();
    let rtt = client
        .ping("10.20.0.10".parse().unwrap(), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", up.output_so_far(), gateway.output_so_far()));
    eprintln!(
        "first packet to the resource answered after {rtt:?} (wall {:?}), \
         through flow request, ICE and the WireGuard handshake",
        first.elapsed()
    );
    for l in up.output_so_far().lines().filter(|l| {
        ["first packet", "connecting to the gateway", "tunnel up ("]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("client: {l}");
    }
    let warm = client
        .ping("10.20.0.10".parse().unwrap(), Duration::from_secs(2))
        .unwrap();
    eprintln!("next ping {warm:?}");
    assert!(received(&res, "10.20.0.10") >= 2);
    tcp_transfer(&res, &client, "10.20.0.10:7000".parse().unwrap(), 1 << 20);

    // Outside the resource's filter (TCP 7001): the gateway drops it.
    let denied = client.enter(|| {
        std::net::TcpStream::connect_timeout(
            &"10.20.0.10:7001".parse().unwrap(),
            Duration::from_secs(2),
        )
    });
    assert!(denied.is_err());
    assert_eq!(dport_7001(&res), 0);
    // A resource without a policy, and an address that is no resource:
    // not routed into the tunnel, nothing arrives.
    assert!(!ping_ok(&client, "10.20.0.11"));
    assert!(!ping_ok(&client, "10.20.0.12"));
    assert_eq!(received(&res, "10.20.0.11"), 0);
    assert_eq!(received(&res, "10.20.0.12"), 0);

    // Status over the socket.
    let status: Value =
        serde_json::from_str(&keyhole_run(&client, &dir, &["status", "--json"])).unwrap();
    eprintln!("{}", keyhole_run(&client, &dir, &["status"]));
    assert_eq!(status["portal_connected"], true);
    let conns = status["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{status}");
    assert_eq!(conns[0]["path"], "direct");
    assert_eq!(conns[0]["remote"], "10.10.0.2:51820");
    assert_eq!(conns[0]["wireguard_established"], true);
    assert!(
        status["tun_tx_bytes"].as_u64().unwrap() > 1 << 20,
        "{status}"
    );
    let web = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web")
        .unwrap();
    assert_eq!(web["state"], "connected");
    let resources = keyhole_run(&client, &dir, &["resources"]);
    assert!(
        resources.contains("web")
            && resources.contains("connected")
            && !resources.contains("other"),
        "{resources}"
    );
    let sock = dir.join("run/keyhole.sock");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions())
            & 0o777,
        0o600
    );

    // DNS: the system resolver points at the stub; other names go to the
    // original upstream unchanged; the DNS resource's name gets a proxy IP
    // whose first packet brings up a flow to the name's real address.
    let rc = std::fs::read_to_string(&resolv_conf).unwrap();
    assert!(rc.contains("nameserver 100.100.100.100"), "{rc}");
    assert_eq!(
        resolve(&client, "100.100.100.100:53", "plain.example"),
        Some(Ipv4Addr::new(192, 0, 2, 7))
    );
    assert_eq!(
        resolve(&client, "100.100.100.100:53", "nothing.example"),
        None
    );
    let proxy = resolve(&client, "100.100.100.100:53", "wiki.corp").expect("proxy IP");
    assert_eq!(proxy.octets()[..2], [100, 96], "{proxy}");
    assert_eq!(
        resolve(&client, "100.100.100.100:53", "wiki.corp"),
        Some(proxy),
        "proxy IPs are stable"
    );
    // The gateway resolves the name before it confirms the flow, so the
    // client's held first packet is translated: the first ping answers.
    let first = Instant::now();
    assert!(
        ping_ok(&client, &proxy.to_string()),
        "first ping to the DNS resource's proxy IP got no answer\n{}",
        up.output_so_far()
    );
    eprintln!(
        "DNS resource: first ping answered {:?} after the first packet",
        first.elapsed()
    );
    assert!(received(&res, "10.20.0.12") >= 1);

    // A wildcard DNS resource (`**.` matches any depth), granted while the
    // client runs: curl by name, with the system resolver the client set
    // up (resolv.conf bind-mounted over /etc/resolv.conf for curl alone),
    // reaches a web server on the resource host through the tunnel.
    let r_apps = id(&api(
        &gw,
        &admin,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"apps","address":{{"kind":"dns","pattern":"**.apps.corp"}},"site_ids":["{site}"]}}"#
        ),
    ));
    api(
        &gw,
        &admin,
        "POST",
        "/policies",
        &format!(r#"{{"group_id":"{group}","resource_id":"{r_apps}"}}"#),
    );
    let web = res
        .enter(|| std::net::TcpListener::bind("10.20.0.12:8080"))
        .unwrap();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut c in web.incoming().flatten() {
            let mut req = [0u8; 1024];
            let _ = c.read(&mut req);
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\nConnection: close\r\n\r\nhello from 10.20.0.12",
            );
        }
    });
    wait_until(
        Duration::from_secs(10),
        "the stub knows **.apps.corp",
        || resolve(&client, "100.100.100.100:53", "api.eu.apps.corp").is_some(),
    );
    // Any depth includes the apex; a sibling name is not covered and goes
    // upstream (which does not know it).
    assert!(resolve(&client, "100.100.100.100:53", "apps.corp").is_some());
    assert_eq!(resolve(&client, "100.100.100.100:53", "xapps.corp"), None);
    let start = Instant::now();
    let body = client
        .run(
            "unshare",
            [
                "-m",
                "sh",
                "-c",
                &format!(
                    "mount --bind {} /etc/resolv.conf && \
                     curl -sS --max-time 10 http://api.eu.apps.corp:8080/",
                    resolv_conf.display()
                ),
            ],
        )
        .unwrap_or_else(|e| panic!("curl by name: {e}\n{}", up.output_so_far()));
    assert_eq!(body, "hello from 10.20.0.12");
    eprintln!(
        "e2e: dns-wildcard curl by name {} ms",
        start.elapsed().as_millis()
    );

    // The portal dies: the established tunnel keeps working.
    portal.kill().unwrap();
    up.wait_for_output("reconnecting", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", up.output_so_far()));
    wait_until(Duration::from_secs(5), "ping without the portal", || {
        ping_ok(&client, "10.20.0.10")
    });

    // The portal comes back; the client reconnects. Deleting the policy
    // revokes the flow: the client drops the route and the connection.
    let portal = gw
        .spawn(
            portal_bin.to_str().unwrap(),
            ["--listen", PORTAL, "--data-dir", data.to_str().unwrap()].map(String::from),
        )
        .unwrap();
    portal
        .wait_for_output("listening on", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", portal.output_so_far()));
    wait_until(Duration::from_secs(30), "client back on the portal", || {
        up.output_so_far()
            .matches("connected to the portal")
            .count()
            >= 2
    });
    gateway
        .wait_for_output("connected to the portal", Duration::from_secs(30))
        .unwrap();
    wait_until(
        Duration::from_secs(45),
        "gateway back on the portal",
        || {
            gateway
                .output_so_far()
                .matches("connected to the portal")
                .count()
                >= 2
        },
    );
    api(&gw, &admin, "DELETE", &format!("/policies/{policy}"), "");
    let revoked = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "route removed on revocation",
        || !routes(&client).contains("10.20.0.10"),
    );
    eprintln!(
        "client route gone {:?} after the policy was deleted",
        revoked.elapsed()
    );
    assert!(!ping_ok(&client, "10.20.0.10"));
    // The DNS resource's flow is untouched.
    assert!(ping_ok(&client, &proxy.to_string()));

    // `keyhole down` stops `up`, which removes the TUN and its routes.
    let down = Instant::now();
    keyhole_run(&client, &dir, &["down"]);
    let st = up.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(st.is_some_and(|s| s.success()), "{}", up.output_so_far());
    eprintln!("keyhole down took {:?}", down.elapsed());
    assert!(client.ip(["link", "show", "kh0"]).is_err());
    assert!(!routes(&client).contains("kh0"), "{}", routes(&client));
    assert!(!dir.join("run/up.json").exists());
    assert!(!sock.exists());
    assert_eq!(
        std::fs::read_to_string(&resolv_conf).unwrap(),
        "nameserver 10.10.0.2\n"
    );
    let out = keyhole(&client, &dir, &["status"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is `keyhole up` running?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // After a SIGKILL, `keyhole down` cleans up what is left (the kernel
    // drops a TUN whose last fd closes, so only the record and socket
    // remain; a stale TUN of that name is removed too).
    let mut up = spawn_up(&client, &dir, &sa_token);
    up.wait_for_output("tunnel up", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", up.output_so_far()));
    assert!(dir.join("run/up.json").exists());
    up.signal(Signal::SIGKILL).unwrap();
    let _ = up.wait_timeout(Duration::from_secs(5));
    assert!(
        std::fs::read_to_string(&resolv_conf)
            .unwrap()
            .contains("100.100.100.100")
    );
    // The next `up` cleans up after the killed one first: the resolver
    // file's original survives (it is what the new backup holds).
    let mut up = spawn_up(&client, &dir, &sa_token);
    up.wait_for_output("tunnel up", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", up.output_so_far()));
    assert!(
        up.output_so_far()
            .contains("cleaning up after an earlier run")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("state/resolv.conf.keyhole-backup")).unwrap(),
        "nameserver 10.10.0.2\n"
    );
    up.signal(Signal::SIGKILL).unwrap();
    let _ = up.wait_timeout(Duration::from_secs(5));
    client
        .ip(["tuntap", "add", "dev", "kh0", "mode", "tun"])
        .unwrap();
    let out = keyhole_run(&client, &dir, &["down"]);
    assert!(out.contains("cleaning up"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&resolv_conf).unwrap(),
        "nameserver 10.10.0.2\n",
        "resolver restored after a SIGKILL"
    );
    assert!(client.ip(["link", "show", "kh0"]).is_err());
    assert!(!dir.join("run/up.json").exists());

    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
