//! `cargo xtask demo`: runs what exists of the system on this machine.
//!
//! Today that is the portal on its embedded store; the demo grows with the
//! system (relay, gateway, client and a resource host in namespaces).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cmd::{cargo, run, workspace_root};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the portal listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory (default: target/demo-data in the workspace).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Start, check, print, then stop instead of waiting for Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

/// Kills the child when dropped, so every exit path tears it down.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first for a graceful stop, then make sure.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
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

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

pub fn run_cmd(args: DemoArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    run(cargo().args(["build", "--quiet", "-p", "keyhole-portal"]))?;

    let root = workspace_root();
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| root.join("target/demo-data"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let portal = Command::new(target_dir.join("debug/keyhole-portal"))
        .arg("--listen")
        .arg(args.listen.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .spawn()
        .context("starting keyhole-portal")?;
    let _portal = Guard(portal);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http_get(args.listen, "/healthz") {
            Ok(r) if r.starts_with("HTTP/1.1 200") => break,
            _ if Instant::now() > deadline => bail!("portal did not become healthy"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }

    println!();
    println!("Keyhole demo is up.");
    println!("  portal:     http://{}/", args.listen);
    println!("  health:     http://{}/healthz", args.listen);
    println!("  data dir:   {}", data_dir.display());
    println!();
    println!("Try: curl http://{}/healthz", args.listen);
    if args.once {
        return Ok(());
    }
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
