//! `cargo xtask demo`: the whole system on this machine, shown working.
//!
//! Builds the binaries, then starts the end-to-end topology the netns tests
//! use ([`Scenario`]): a portal on a fresh SQLite store, a relay, a gateway
//! and a client, each in its own network namespace, with a resource host
//! behind the gateway. The scenario configures the portal through its REST
//! API (site token, resource, group with a service account, policy). The
//! demo then serves HTTP on the resource host, curls it from the client's
//! namespace through the tunnel, and forwards a host port to the portal so
//! the admin UI opens in a browser on this machine. Ctrl-C (or `--once`)
//! tears it all down: processes, namespaces, temp dirs; also on error or
//! panic, since every part cleans up when dropped.

mod background;
mod forward;
mod web;

use std::{
    net::{SocketAddr, TcpListener},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use keyhole_tests_netns::scenario::{
    ADMIN_EMAIL, ADMIN_PASSWORD, PORTAL_ADDR, RELAY_METRICS, RESOURCE_IP, Scenario, ScenarioConfig,
    client_command, sock,
};

use crate::binaries::{BINARIES, env_for};
use crate::cmd::{cargo, run};
use background::Background;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Host address forwarded to the portal (admin UI and API).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Start, check traffic, print, then tear down instead of waiting for
    /// Ctrl-C (a smoke run for CI).
    #[arg(long)]
    pub once: bool,
}

pub fn run_cmd(args: DemoArgs) -> anyhow::Result<()> {
    // Before anything exists: a Ctrl-C during start-up then lets the
    // start finish and tears down instead of killing us mid-way.
    on_ctrl_c();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces: run it as root");
    }
    crate::setup::run()?;
    build()?;
    // Bound before anything starts, so a taken port fails fast.
    let listener = forward::bind(args.listen)?;
    // The bound address: `--listen 127.0.0.1:0` picks a free port.
    let args = DemoArgs {
        listen: listener.local_addr()?,
        ..args
    };

    println!("starting portal, relay, gateway, client and resource host in namespaces…");
    let started = Instant::now();
    let mut scenario = Scenario::start(ScenarioConfig::default()).context("starting the system")?;
    println!(
        "up in {:.1} s (client routed the resource {:.1} s after `keyhole up`)",
        started.elapsed().as_secs_f64(),
        scenario.client_ready.as_secs_f64()
    );
    // Declared after the scenario, so its threads stop before the
    // namespaces they use are deleted.
    let mut bg = Background::default();
    let web = scenario
        .hosts
        .resource
        .enter(|| TcpListener::bind((RESOURCE_IP, 80)))
        .context("binding the resource host's web server")?;
    bg.spawn("demo-web", |stop| {
        web::serve(web, RESOURCE_IP.to_owned(), stop)
    });
    let portal_ns = scenario.hosts.portal.path();
    bg.spawn("demo-forward", move |stop| {
        forward::run(listener, &portal_ns, sock(PORTAL_ADDR), stop)
    });

    if STOP.load(Ordering::SeqCst) {
        println!("interrupted during start-up: tearing down.");
        return Ok(());
    }
    let result = show(&scenario, &args);
    if result.is_err() {
        eprintln!("{}", scenario.logs());
    }
    result?;
    if args.once {
        println!("--once: tearing down.");
        return Ok(());
    }
    println!("Press Ctrl-C to stop and tear everything down.");
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(who) = exited(&mut scenario) {
            // A terminal's Ctrl-C reaches the children too (same process
            // group), maybe before our handler ran: not a failure then.
            std::thread::sleep(Duration::from_millis(300));
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            eprintln!("{who} exited:\n{}", scenario.logs());
            bail!("{who} exited; tearing down");
        }
    }
    println!("stopping…");
    Ok(())
}

/// Builds the four binaries and points the scenario at these builds (it
/// would otherwise prefer a release build that may be stale).
fn build() -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet"]);
    for (package, _, _) in BINARIES {
        cmd.args(["-p", package]);
    }
    run(&mut cmd)?;
    for (var, path) in env_for("debug") {
        // SAFETY: no other thread reads the environment at this point
        // (setup and the build ran to completion in this thread).
        unsafe { std::env::set_var(var, path) };
    }
    Ok(())
}

/// Checks traffic through the tunnel and prints where to look.
fn show(s: &Scenario, args: &DemoArgs) -> anyhow::Result<()> {
    let url = format!("http://{RESOURCE_IP}/");
    let t = Instant::now();
    let got = s
        .hosts
        .client
        .run("curl", ["-sS", "--max-time", "10", &url])
        .with_context(|| format!("curl {url} from the client's namespace"))?;
    let took = t.elapsed();
    if got != web::body(RESOURCE_IP) {
        bail!("curl {url} through the tunnel answered {got:?}");
    }
    let health = forward::check(args.listen).context("the admin URL through the forward")?;
    let status = client_command(&s.hosts.client, s.dir.path(), &["status"])?
        .output()
        .context("keyhole status")?;
    let admin = format!("http://{}/", args.listen);
    let client_ns = s.hosts.client.name();
    let dir = s.dir.path();
    let keyhole = std::env::var("KEYHOLE_CLIENT_BIN").unwrap_or_else(|_| "keyhole".into());
    let token = &s.portal.admin_token;

    println!();
    println!("Traffic through the tunnel (client → gateway → resource host):");
    println!(
        "  $ ip netns exec {client_ns} curl {url}   ({} ms)",
        took.as_millis()
    );
    print!("  {got}");
    println!();
    println!("Client state (`keyhole status`):");
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!("  {line}");
    }
    println!();
    println!("Keyhole demo is up.");
    println!(
        "  admin UI:      {admin}  (forwarded to the portal at {PORTAL_ADDR} in netns {}; /healthz: {health})",
        s.hosts.portal.name()
    );
    println!("  admin sign-in: {ADMIN_EMAIL} / {ADMIN_PASSWORD}");
    println!("  admin API:     {admin}api/v1  (bearer token {token})");
    println!(
        "  namespaces:    portal {}, relay {}, gateway {}, client {client_ns}, resource {}",
        s.hosts.portal.name(),
        s.hosts.relay.name(),
        s.hosts.gateway.name(),
        s.hosts.resource.name()
    );
    println!(
        "  created through the API: resource `web` ({RESOURCE_IP}), group `eng` with service account `laptop`, a policy granting it"
    );
    println!();
    println!("Try next (as root, in another terminal):");
    println!("  ip netns exec {client_ns} curl {url}");
    println!(
        "  KEYHOLE_STATE_DIR={0}/client-state KEYHOLE_RUNTIME_DIR={0}/client-run ip netns exec {client_ns} {keyhole} status",
        dir.display()
    );
    println!("  curl -H 'Authorization: Bearer {token}' {admin}api/v1/policies");
    println!(
        "  curl -X DELETE -H 'Authorization: Bearer {token}' {admin}api/v1/policies/{}   # then the curl above fails",
        s.policy_id
    );
    println!(
        "  ip netns exec {} curl -s http://{RELAY_METRICS}/metrics",
        s.hosts.relay.name()
    );
    println!("  open {admin} in a browser and sign in");
    println!();
    Ok(())
}

/// The first part of the system found to have exited, if any.
fn exited(s: &mut Scenario) -> Option<&'static str> {
    let mut gone = |p: &mut keyhole_tests_netns::Proc| matches!(p.try_status(), Ok(Some(_)));
    if gone(&mut s.portal.proc) {
        return Some("the portal");
    }
    if s.relay.as_mut().is_some_and(&mut gone) {
        return Some("the relay");
    }
    if gone(&mut s.gateway) {
        return Some("the gateway");
    }
    if gone(&mut s.client) {
        return Some("the client");
    }
    None
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Sets STOP when SIGINT or SIGTERM arrives. The children share our
/// process group and may see SIGINT too; teardown reaps them either way.
fn on_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
