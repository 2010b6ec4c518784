//! Makes the portal, which listens inside its namespace, reachable from the
//! host: a TCP forward from a host port to the portal's address.
//!
//! The listener is bound in the host's namespace, then the accepting
//! thread joins the portal's (`setns` is per thread), so every socket it
//! connects afterwards lives there. Nothing is added to the host's network
//! configuration, so teardown has nothing to undo on the host.

use std::{
    fs::File,
    io::{self, ErrorKind, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;

use super::background::POLL;

/// Binds `listen` on the host; hand it to [`run`].
pub fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(listen).with_context(|| {
        format!("binding {listen} for the admin URL (pick another with --listen)")
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Joins the namespace at `netns` and forwards each connection accepted on
/// `listener` to `target` until `stop`.
pub fn run(listener: TcpListener, netns: &Path, target: SocketAddr, stop: Arc<AtomicBool>) {
    if let Err(e) = enter(netns) {
        eprintln!("demo forward: joining {}: {e}", netns.display());
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inbound, _)) => {
                if let Err(e) = forward(inbound, target) {
                    eprintln!("demo forward: to {target}: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                eprintln!("demo forward: accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn enter(netns: &Path) -> io::Result<()> {
    let f = File::open(netns)?;
    // SAFETY: a plain syscall on an fd we hold open; it only changes this
    // thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to `target` (in this thread's namespace) and copies both ways on
/// two threads, which end when either side closes.
fn forward(inbound: TcpStream, target: SocketAddr) -> io::Result<()> {
    inbound.set_nonblocking(false)?;
    let outbound = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    for (mut from, mut to) in [
        (inbound.try_clone()?, outbound.try_clone()?),
        (outbound, inbound),
    ] {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

/// `GET /healthz` through the forward at `addr`: the admin URL works from
/// the host. Returns the status line.
pub fn check(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.lines().next().unwrap_or_default().to_owned();
    if !status.contains(" 200 ") {
        anyhow::bail!("GET http://{addr}/healthz answered {resp:?}");
    }
    Ok(status)
}
