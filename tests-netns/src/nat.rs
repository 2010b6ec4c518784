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
