//! The resource host's web server: a few lines of HTTP/1.0 on a listener
//! bound inside the resource namespace, served from a demo thread.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::background::POLL;

/// What every request gets.
pub fn body(ip: &str) -> String {
    format!("hello from the resource host {ip}, reached through the Keyhole tunnel\n")
}

/// Answers every connection on `listener` with [`body`] until `stop`.
pub fn serve(listener: TcpListener, ip: String, stop: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("demo web server: {e}");
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = answer(s, &ip) {
                    eprintln!("demo web server: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                eprintln!("demo web server: accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn answer(mut s: TcpStream, ip: &str) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Read the request head; its content does not matter.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = body(ip);
    write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
