//! `cargo xtask demo`: runs what exists of the system on this machine and
//! shows it working.
//!
//! Today: the portal on a fresh embedded SQLite store, configured through
//! its REST API the way an admin script would (a group, a DNS resource with
//! filters, a policy, a gateway token for the default site). It grows with
//! the system: relay, gateway, client and a resource host in namespaces.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::cmd::{cargo, run, workspace_root};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the portal listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Start, check, print, then stop instead of waiting for Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

const ADMIN_EMAIL: &str = "admin@keyhole.demo";
const ADMIN_PASSWORD: &str = "keyhole-demo-password";

/// Kills the child when dropped, so every exit path tears it down.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first for a graceful stop, then make sure.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tiny HTTP/1.1 client: enough for the demo, no dependency.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// Calls the REST API and returns the JSON body, failing on non-2xx.
fn api(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let body = (method != "GET").then_some(&body);
    let (status, text) = http(addr, method, &format!("/api/v1{path}"), Some(token), body)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: HTTP {status}: {text}");
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
}

fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .context("response has no id")
}

pub fn run_cmd(args: DemoArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    run(cargo().args(["build", "--quiet", "-p", "keyhole-portal"]))?;

    let root = workspace_root();
    // A fresh store each run: the first start creates the admin and prints
    // the one-time API token the demo uses.
    let data_dir = root.join("target/demo-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut child = Command::new(target_dir.join("debug/keyhole-portal"))
        .arg("--listen")
        .arg(args.listen.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .env("KEYHOLE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("KEYHOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting keyhole-portal")?;
    let stdout = child.stdout.take().context("portal stdout")?;
    let _portal = Guard(child);

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut token = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("portal exited or did not start in 30 s")?;
        if let Some(t) = line.split("admin API token").nth(1) {
            token = t.rsplit(' ').next().map(str::to_owned);
        } else {
            println!("portal | {line}");
        }
        if line.contains("listening on") {
            break;
        }
    }
    let token = token.context("the portal printed no admin API token")?;
    let addr = args.listen;
    match http(addr, "GET", "/healthz", None, None)? {
        (200, _) => {}
        (s, b) => bail!("portal unhealthy: HTTP {s}: {b}"),
    }

    // Configure it the way an admin script would.
    let me = api(addr, &token, "GET", "/me", json!({}))?;
    let sites = api(addr, &token, "GET", "/sites", json!({}))?;
    let site = sites["items"].get(0).context("no default site")?.clone();
    let site_id = id(&site)?;
    let group = api(
        addr,
        &token,
        "POST",
        "/groups",
        json!({"name": "engineering"}),
    )?;
    let group_id = id(&group)?;
    api(
        addr,
        &token,
        "POST",
        &format!("/groups/{group_id}/members"),
        json!({"kind": "user", "id": id(&me)?}),
    )?;
    let resource = api(
        addr,
        &token,
        "POST",
        "/resources",
        json!({
            "name": "wiki",
            "address": {"kind": "dns", "pattern": "**.wiki.corp"},
            "filters": [{"protocol": "tcp", "ports": {"start": 80, "end": 443}}, {"protocol": "icmp"}],
            "site_ids": [site_id],
        }),
    )?;
    let resource_id = id(&resource)?;
    api(
        addr,
        &token,
        "POST",
        "/policies",
        json!({"group_id": group_id, "resource_id": resource_id,
               "description": "engineering reaches the wiki"}),
    )?;
    let gw_token = api(
        addr,
        &token,
        "POST",
        &format!("/sites/{site_id}/tokens"),
        json!({}),
    )?;
    let gw_secret = gw_token["token"].as_str().unwrap_or_default();
    let (_, metrics) = http(addr, "GET", "/metrics", None, None)?;

    println!();
    println!("Keyhole demo is up.");
    println!("  admin UI:       http://{addr}/");
    println!("  admin sign-in:  {ADMIN_EMAIL} / {ADMIN_PASSWORD}");
    println!("  admin API:      http://{addr}/api/v1 (token {token})");
    println!("  OpenAPI:        http://{addr}/api/v1/openapi.json");
    println!(
        "  metrics:        http://{addr}/metrics ({} lines)",
        metrics.lines().count()
    );
    println!("  data dir:       {}", data_dir.display());
    println!();
    println!("Created through the API: group `engineering` (with the admin), resource");
    println!(
        "`wiki` (**.wiki.corp, tcp 80-443 + icmp) in site `{}`, and a policy.",
        site["name"].as_str().unwrap_or("?")
    );
    println!();
    println!("Try:");
    println!("  curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/resources");
    println!("  curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/policies");
    println!("  deploy a gateway for this site (Linux, root):");
    println!("    KEYHOLE_TOKEN={gw_secret} keyhole-gateway --portal-url http://{addr}");
    if args.once {
        return Ok(());
    }
    println!();
    println!("Press Ctrl-C to stop and tear everything down.");
    on_ctrl_c();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping…");
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Sets STOP when SIGINT or SIGTERM arrives (the children share our process
/// group and see SIGINT too; the guard reaps them either way).
fn on_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
