//! The real client end to end: a real `keyhole-portal` (SQLite in a temp
//! dir) configured over its REST API, the real `keyhole-gateway`
//! (userspace backend) and the real `keyhole up` in its own namespace.
//! The first packet to a resource makes the client ask for a flow, build
//! the tunnel and deliver it; an address without a policy gets nothing;
//! `keyhole status` shows the connection; tunnels survive the portal's
//! death; `keyhole down` removes TUN and routes, also after a SIGKILL.
//!
//! ```text
//!  client 10.10.0.1 ── 10.10.0.2 gateway+portal 10.20.0.1 ── 10.20.0.10/.11/.12 res
//! ```
//!
//! Needs root and the binaries: `cargo build -p keyhole-portal -p
//! keyhole-gateway -p keyhole-client` (or KEYHOLE_PORTAL_BIN,
//! KEYHOLE_GATEWAY_BIN, KEYHOLE_CLIENT_BIN).

#[path = "tunnel_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
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
    let status: Value =
        serde_json::from_str(&keyhole_run(&client, &dir, &["status", "--json"])).unwrap();
    assert_eq!(
        status["connections"].as_array().unwrap().len(),
        0,
        "{status}"
    );
    assert!(!ping_ok(&client, "10.20.0.10"));

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

    // After a SIGKILL, `keyhole down` cleans up what is left (the kernel
    // drops a TUN whose last fd closes, so only the record and socket
    // remain; a stale TUN of that name is removed too).
    let mut up = spawn_up(&client, &dir, &sa_token);
    up.wait_for_output("tunnel up", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", up.output_so_far()));
    assert!(dir.join("run/up.json").exists());
    up.signal(Signal::SIGKILL).unwrap();
    let _ = up.wait_timeout(Duration::from_secs(5));
    client
        .ip(["tuntap", "add", "dev", "kh0", "mode", "tun"])
        .unwrap();
    let out = keyhole_run(&client, &dir, &["down"]);
    assert!(out.contains("cleaning up"), "{out}");
    assert!(client.ip(["link", "show", "kh0"]).is_err());
    assert!(!dir.join("run/up.json").exists());

    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
