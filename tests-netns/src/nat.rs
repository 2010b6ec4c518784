//! NAT routers built from nftables masquerading.

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// Which NAT behaviour (RFC 4787 terms) a router shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// `masquerade`: Linux keeps the source port when it is free and reuses
    /// one mapping for every destination of an internal address:port, i.e.
    /// endpoint-independent mapping. Conntrack admits only replies from the
    /// destination contacted (address- and port-dependent filtering), the
    /// classic "port-restricted cone": hole punching works.
    EndpointIndependent,
    /// `masquerade fully-random`: every new flow (5-tuple) gets a random
    /// source port, so each destination sees a different mapping
    /// (address- and port-dependent mapping, "symmetric NAT"): server-
    /// reflexive candidates are useless and only a relay gets through.
    Symmetric,
}

/// Endpoint-independent NAT: masquerade traffic leaving `out_if` of `router`.
/// The router also needs [`Netns::enable_forwarding`].
pub fn nat_masquerade(router: &Netns, out_if: &str) -> Result<()> {
    nat(router, out_if, NatKind::EndpointIndependent)
}

/// Symmetric NAT on traffic leaving `out_if` of `router`.
pub fn nat_symmetric(router: &Netns, out_if: &str) -> Result<()> {
    nat(router, out_if, NatKind::Symmetric)
}

/// Installs an nftables table `keyhole_nat_<out_if>` in `router` that
/// source-NATs traffic leaving `out_if` to that interface's address.
/// IPv4 only (`table ip`): the IPv6 paths in tests are routed, not NATed.
pub fn nat(router: &Netns, out_if: &str, kind: NatKind) -> Result<()> {
    if out_if.is_empty()
        || !out_if
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("unusable interface name {out_if:?} for NAT");
    }
    let table: String = out_if
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let flags = match kind {
        NatKind::EndpointIndependent => "",
        NatKind::Symmetric => " fully-random",
    };
    let ruleset = format!(
        "table ip keyhole_nat_{table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{out_if}\" masquerade{flags}\n\
         \t}}\n\
         }}\n"
    );
    router
        .run_with_stdin("nft", ["-f", "-"], ruleset.as_bytes())
        .with_context(|| {
            format!(
                "install {kind:?} NAT on {out_if} in netns {}",
                router.name()
            )
        })?;
    Ok(())
}

/// Drops connections that start from outside `out_if` of `router` and are
/// addressed to the router itself, as a home router's firewall does.
///
/// Without it a hole-punching probe that arrives before the inside host
/// has sent anything becomes a confirmed conntrack entry of the router's
/// own (a UDP "connection" to a closed port); the inside host's later
/// packet to that peer then clashes with it and masquerade picks another
/// source port, so the NAT stops being endpoint-independent for that peer.
/// A drop in the input hook comes before conntrack confirms the entry.
pub fn drop_unsolicited(router: &Netns, out_if: &str) -> Result<()> {
    let table = table_suffix(out_if)?;
    let ruleset = format!(
        "table inet keyhole_fw_{table} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{out_if}\" ct state new drop\n\
         \t}}\n\
         }}\n"
    );
    router
        .run_with_stdin("nft", ["-f", "-"], ruleset.as_bytes())
        .with_context(|| format!("drop unsolicited on {out_if} in netns {}", router.name()))?;
    Ok(())
}

/// Drops UDP forwarded from `in_if` of `router` except DNS (port 53), as
/// networks that allow only TCP out do: a client behind it reaches relays
/// over TCP only.
pub fn block_udp(router: &Netns, in_if: &str) -> Result<()> {
    let table = table_suffix(in_if)?;
    let ruleset = format!(
        "table inet keyhole_noudp_{table} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{in_if}\" udp dport != 53 counter drop\n\
         \t}}\n\
         }}\n"
    );
    router
        .run_with_stdin("nft", ["-f", "-"], ruleset.as_bytes())
        .with_context(|| format!("block UDP from {in_if} in netns {}", router.name()))?;
    Ok(())
}

/// UDP datagrams [`block_udp`] dropped on `in_if` of `router`.
pub fn blocked_udp_packets(router: &Netns, in_if: &str) -> Result<u64> {
    let table = table_suffix(in_if)?;
    let out = router.run(
        "nft",
        [
            "list",
            "chain",
            "inet",
            &format!("keyhole_noudp_{table}"),
            "forward",
        ],
    )?;
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "packets")
        .and_then(|_| words.next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no drop counter in:\n{out}"))
}

/// A table-name suffix for interface `name`, refusing names nft would not
/// take literally.
fn table_suffix(name: &str) -> Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("unusable interface name {name:?}");
    }
    Ok(name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect())
}
