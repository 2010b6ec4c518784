//! Waiting for servers inside a namespace to become reachable.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::netns::Netns;

const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Waits until a TCP connect to `addr`, made from inside `ns`, succeeds.
pub fn wait_for_tcp_port(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let last_error = ns.enter(|| {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = left
                .min(Duration::from_millis(500))
                .max(Duration::from_millis(1));
            match TcpStream::connect_timeout(&addr, attempt) {
                Ok(_) => return None,
                Err(e) if Instant::now() >= deadline => return Some(e),
                Err(_) => std::thread::sleep(RETRY_PAUSE),
            }
        }
    });
    match last_error {
        None => Ok(()),
        Some(e) => bail!(
            "no TCP listener at {addr} in netns {} after {timeout:?}: {e}",
            ns.name()
        ),
    }
}

/// Waits until some UDP socket in `ns` is bound to `port` (any address),
/// as `ss -Hlun` run in the namespace shows.
pub fn wait_for_udp_listen(ns: &Netns, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let table = ns.run("ss", ["-Hlun"])?;
        if udp_ports(&table).any(|p| p == port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "no UDP socket on port {port} in netns {} after {timeout:?}; ss -Hlun:\n{table}",
                ns.name()
            );
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Local ports in `ss -Hlun` output. Lines look like
/// `UNCONN 0 0 0.0.0.0:5000 0.0.0.0:*`, `... [::]:5000 [::]:*` or
/// `... 127.0.0.1%lo:53 ...`.
fn udp_ports(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().filter_map(|line| {
        let local = line.split_whitespace().nth(3)?;
        local.rsplit_once(':')?.1.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::udp_ports;

    #[test]
    fn parses_ss_output() {
        let table = "UNCONN 0 0 0.0.0.0:5000 0.0.0.0:*\n\
                     UNCONN 0 0 [::]:6000 [::]:*\n\
                     UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:*\n\
                     garbage\n";
        assert_eq!(udp_ports(table).collect::<Vec<_>>(), vec![5000, 6000, 53]);
    }
}
