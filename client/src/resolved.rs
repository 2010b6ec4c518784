//! Pointing systemd-resolved at the stub: per-link DNS on the TUN with the
//! routing domain `~.` (every name goes to the stub) instead of touching
//! /etc/resolv.conf. `resolvectl revert` undoes it on exit; after a crash
//! the link vanishes with the TUN (the next `up`/`down` removes a leftover
//! one, reverting first) and resolved forgets its settings by itself.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// resolved's own view of the upstreams, written whatever the mode.
pub const UPSTREAM_FILE: &str = "/run/systemd/resolve/resolv.conf";

/// Whether a resolv.conf symlink target is one of resolved's files
/// (`/run/systemd/resolve/stub-resolv.conf` or `resolv.conf`, also
/// written relative, as `../run/systemd/resolve/...`).
pub fn is_resolved_target(target: &Path) -> bool {
    let name_ok = target
        .file_name()
        .is_some_and(|n| n == "stub-resolv.conf" || n == "resolv.conf");
    let dir_ok = target
        .parent()
        .is_some_and(|d| d.ends_with("systemd/resolve"));
    name_ok && dir_ok
}

/// Whether `resolv_conf` is a symlink into resolved's files.
pub fn links_to_resolved(resolv_conf: &Path) -> bool {
    std::fs::read_link(resolv_conf).is_ok_and(|t| is_resolved_target(&t))
}

/// Whether resolved is running here: `resolvectl` answers.
pub fn answers() -> bool {
    resolvectl(&["dns"]).is_ok()
}

/// Auto-detection: the resolver file is resolved's and resolved answers.
pub fn detect(resolv_conf: &Path) -> bool {
    links_to_resolved(resolv_conf) && answers()
}

/// The upstreams resolved uses, from `resolvectl dns` output (global
/// first, then per link), without `own_link` (the TUN) and `exclude`
/// (the stub). DoT names (`#name`) are dropped: the stub speaks plain DNS.
pub fn parse_dns(output: &str, own_link: &str, exclude: IpAddr) -> Vec<SocketAddr> {
    let own = format!("({own_link})");
    let mut out = Vec::new();
    for line in output.lines() {
        let Some((head, servers)) = line.split_once(": ") else {
            continue;
        };
        if head.trim_end().ends_with(&own) {
            continue;
        }
        for s in servers.split_whitespace() {
            if let Some(a) = parse_server(s)
                && a.ip() != exclude
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
    }
    out
}

/// `1.1.1.1`, `1.1.1.1:5353`, `[2001:db8::1]:53`, `fe80::1%2`, each maybe
/// with `#server-name`.
fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.split('#').next()?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    // A link-local IPv6 address is only usable with its interface index.
    let (ip, scope) = s.split_once('%')?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        ip.parse().ok()?,
        53,
        0,
        scope.parse().ok()?,
    )))
}

/// The upstreams resolved used before `up` pointed it at the stub.
pub fn upstreams(own_link: &str, exclude: IpAddr) -> Vec<SocketAddr> {
    let from_cli = resolvectl(&["dns"])
        .map(|o| parse_dns(&o, own_link, exclude))
        .unwrap_or_default();
    if !from_cli.is_empty() {
        return from_cli;
    }
    let text = std::fs::read_to_string(UPSTREAM_FILE).unwrap_or_default();
    crate::resolv::nameservers(&text)
        .into_iter()
        .filter(|a| a.ip() != exclude)
        .collect()
}

/// Sends every name to `stub` through the link `tun`.
pub fn configure(tun: &str, stub: IpAddr) -> Result<()> {
    let stub = stub.to_string();
    // Fails fast (no retries) without resolvectl or a running resolved.
    resolvectl(&["dns"]).context("systemd-resolved does not answer")?;
    // resolved learns about a new link from netlink; it may not know the
    // TUN yet right after it was created.
    let mut tries = 0;
    loop {
        match resolvectl(&["dns", tun, &stub]) {
            Ok(_) => break,
            Err(e) if tries < 20 => {
                tracing::debug!(error = %format!("{e:#}"), "resolved does not know the TUN yet");
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    resolvectl(&["domain", tun, "~."])?;
    resolvectl(&["default-route", tun, "yes"])?;
    Ok(())
}

/// Drops the link's DNS settings. Ok if the link is gone.
pub fn revert(tun: &str) -> Result<()> {
    if !Path::new("/sys/class/net").join(tun).exists() {
        return Ok(());
    }
    resolvectl(&["revert", tun]).map(|_| ())
}

fn resolvectl(args: &[&str]) -> Result<String> {
    let out = Command::new("resolvectl")
        .arg("--no-pager")
        .args(args)
        .output()
        .context("running resolvectl (is systemd-resolved installed?)")?;
    if !out.status.success() {
        bail!(
            "resolvectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_targets_are_recognised() {
        for t in [
            "/run/systemd/resolve/stub-resolv.conf",
            "/run/systemd/resolve/resolv.conf",
            "../run/systemd/resolve/stub-resolv.conf",
        ] {
            assert!(is_resolved_target(Path::new(t)), "{t}");
        }
        for t in [
            "/run/NetworkManager/resolv.conf",
            "/run/systemd/resolve/io.systemd.Resolve",
            "/etc/resolv.conf.d/resolv.conf",
            "stub-resolv.conf",
        ] {
            assert!(!is_resolved_target(Path::new(t)), "{t}");
        }
    }

    #[test]
    fn only_a_symlink_into_resolved_counts() {
        let dir = std::env::temp_dir().join(format!("keyhole-resolved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, "nameserver 10.0.0.1\n").unwrap();
        assert!(!links_to_resolved(&file));
        let link = dir.join("link");
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &link).unwrap();
        assert!(links_to_resolved(&link));
        let other = dir.join("other");
        std::os::unix::fs::symlink(&file, &other).unwrap();
        assert!(!links_to_resolved(&other));
        assert!(!links_to_resolved(&dir.join("missing")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn upstreams_come_from_every_link_but_ours_without_the_stub() {
        let out = "Global: 10.255.255.53 1.1.1.1#cloudflare-dns.com\n\
                   Link 2 (eth0): 192.168.1.1 [2001:db8::53]:5353 fe80::1%2 10.255.255.53\n\
                   Link 3 (wlan0):\n\
                   Link 7 (keyhole0): 100.100.100.100 9.9.9.9\n\
                   Link 8 (keyhole00): 100.100.100.100 8.8.8.8 garbage\n";
        let got = parse_dns(out, "keyhole0", "100.100.100.100".parse().unwrap());
        let want: Vec<SocketAddr> = [
            "10.255.255.53:53",
            "1.1.1.1:53",
            "192.168.1.1:53",
            "[2001:db8::53]:5353",
            "[fe80::1%2]:53",
            "8.8.8.8:53",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(got, want);
        assert!(parse_dns("", "kh0", "100.100.100.100".parse().unwrap()).is_empty());
        assert!(parse_dns("no colon here\n", "kh0", "1.1.1.1".parse().unwrap()).is_empty());
    }
}
