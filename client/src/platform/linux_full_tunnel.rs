//! The internet resource on Linux: policy routing, as wg-quick does it.
//!
//! Rules (both families, fixed priorities so a later run finds and removes
//! them after a crash):
//! - 5200 `to <portal or relay> lookup main`: the control channel and
//!   relays keep their real routes, whoever sends to them;
//! - 5210 `lookup main suppress_prefixlength 0`: the main table wins with
//!   anything more specific than a default route (the LAN, the routes of
//!   other resources into the TUN);
//! - 5220 `not fwmark 0x6b68 lookup 27496`: everything else goes to table
//!   27496, whose only route is a default into the TUN. The client's own
//!   UDP socket carries the mark ([`bypass`]), so its WireGuard and ICE
//!   datagrams fall through to the main table instead of looping.
//!
//! Why not `0.0.0.0/1` + `128.0.0.0/1` with host routes for exclusions:
//! the gateways' addresses come and go with ICE, and every one would need
//! an exclusion before its first packet; a socket mark covers them all.

use std::collections::BTreeSet;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd as _;

use anyhow::{Result, bail};

use super::FullTunnel;

pub const MARK: u32 = 0x6b68;
const TABLE: &str = "27496";
const PRIO_EXCLUDE: &str = "5200";
const PRIO_SUPPRESS: &str = "5210";
const PRIO_TUNNEL: &str = "5220";

fn fam(v6: bool) -> &'static str {
    if v6 { "-6" } else { "-4" }
}

/// Stateless: what is installed is read back from the kernel, so a call
/// after a crash or a second call converges on `want` all the same.
pub fn apply(tun: &str, want: &FullTunnel) -> Result<()> {
    let mut errors = Vec::new();
    let families = [
        (false, want.v4.map(IpAddr::V4)),
        (true, want.v6.map(IpAddr::V6)),
    ];
    for (v6, src) in families {
        let Some(src) = src else {
            remove_family(v6);
            continue;
        };
        // Route first, then the rules that send traffic to it.
        let src_s = src.to_string();
        let mut r = super::ip(&[
            fam(v6),
            "route",
            "replace",
            "default",
            "dev",
            tun,
            "table",
            TABLE,
            "src",
            &src_s,
        ]);
        if r.is_ok() && rules_at(v6, PRIO_TUNNEL).is_empty() {
            r = super::ip(&[
                fam(v6),
                "rule",
                "add",
                "priority",
                PRIO_SUPPRESS,
                "lookup",
                "main",
                "suppress_prefixlength",
                "0",
            ])
            .and_then(|()| {
                super::ip(&[
                    fam(v6),
                    "rule",
                    "add",
                    "priority",
                    PRIO_TUNNEL,
                    "not",
                    "fwmark",
                    &MARK.to_string(),
                    "lookup",
                    TABLE,
                ])
            });
        }
        if let Err(e) = r {
            remove_family(v6);
            errors.push(e);
            continue;
        }
        let have: BTreeSet<IpAddr> = rules_at(v6, PRIO_EXCLUDE)
            .iter()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "to").nth(1))
            .filter_map(|a| a.parse().ok())
            .collect();
        let want_here: BTreeSet<IpAddr> = want
            .exclude
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .copied()
            .collect();
        for gone in have.difference(&want_here) {
            let _ = exclusion(*gone, "del");
        }
        for new in want_here.difference(&have) {
            if let Err(e) = exclusion(*new, "add") {
                errors.push(e);
            }
        }
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// `ip rule show priority P` lines of one family.
fn rules_at(v6: bool, prio: &str) -> Vec<String> {
    std::process::Command::new("ip")
        .args([fam(v6), "rule", "show", "priority", prio])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn exclusion(ip: IpAddr, op: &str) -> Result<()> {
    let host = if ip.is_ipv4() { 32 } else { 128 };
    super::ip(&[
        fam(ip.is_ipv6()),
        "rule",
        op,
        "priority",
        PRIO_EXCLUDE,
        "to",
        &format!("{ip}/{host}"),
        "lookup",
        "main",
    ])
}

/// Deletes every rule at one of our priorities and our table's routes, for
/// one family.
fn remove_family(v6: bool) {
    for prio in [PRIO_EXCLUDE, PRIO_SUPPRESS, PRIO_TUNNEL] {
        // `ip rule del priority P` removes one rule per call.
        for _ in 0..1024 {
            if super::ip(&[fam(v6), "rule", "del", "priority", prio]).is_err() {
                break;
            }
        }
    }
    let _ = super::ip(&[fam(v6), "route", "flush", "table", TABLE]);
}

/// Removes everything of ours, whatever state a killed run left.
pub fn clear() {
    remove_family(false);
    remove_family(true);
}

/// Marks the socket so its traffic skips table 27496.
pub fn bypass(socket: &UdpSocket) -> Result<()> {
    let mark: libc::c_int = MARK as libc::c_int;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!(
            "setting SO_MARK on the tunnel socket: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
