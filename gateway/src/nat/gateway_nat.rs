//! Applies the NAT table through `nft -j -f -` and keeps its client set.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    net::IpAddr,
};

use keyhole_proto::TunnelAddresses;
use nftables::{helper, schema::Nftables};

use super::dns_rules;
use super::ruleset::{self, NatConfig};
use crate::dns::Desired;

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("invalid NAT configuration: {0}")]
    Config(String),
    #[error("nft failed {what}: {source}{}", stderr_of(source))]
    Nft {
        what: String,
        #[source]
        source: helper::NftablesError,
    },
}

fn stderr_of(e: &helper::NftablesError) -> String {
    match e {
        helper::NftablesError::NftFailed { stderr, .. } if !stderr.trim().is_empty() => {
            format!(": {}", stderr.trim())
        }
        _ => String::new(),
    }
}

/// How to run `nft`: `nft` itself by default; a prefix such as
/// `ip netns exec NS nft` lets a caller (the tests) aim at a namespace.
#[derive(Debug, Clone)]
pub struct NftCommand {
    program: OsString,
    args: Vec<OsString>,
}

impl Default for NftCommand {
    fn default() -> Self {
        Self {
            program: "nft".into(),
            args: Vec::new(),
        }
    }
}

impl NftCommand {
    /// `program args… -j -f -`.
    pub fn new(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// `ip netns exec NAME nft`.
    pub fn in_netns(name: &str) -> Self {
        Self::new("ip", ["netns", "exec", name, "nft"])
    }

    fn apply(&self, batch: &Nftables<'_>, what: impl FnOnce() -> String) -> Result<(), NatError> {
        helper::apply_ruleset_with_args(
            batch,
            Some(&self.program),
            self.args
                .iter()
                .map(OsString::as_os_str)
                .collect::<Vec<&OsStr>>(),
        )
        .map_err(|source| NatError::Nft {
            what: what(),
            source,
        })
    }

    /// As `apply`, for a batch built as raw JSON.
    fn apply_raw(
        &self,
        batch: &serde_json::Value,
        what: impl FnOnce() -> String,
    ) -> Result<(), NatError> {
        helper::apply_ruleset_raw(
            &batch.to_string(),
            Some(&self.program),
            self.args
                .iter()
                .map(OsString::as_os_str)
                .collect::<Vec<&OsStr>>(),
        )
        .map(drop)
        .map_err(|source| NatError::Nft {
            what: what(),
            source,
        })
    }
}

fn check_ifname(what: &str, name: &str) -> Result<(), NatError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NatError::Config(format!(
            "{what} {name:?} is not an interface name"
        )))
    }
}

/// The gateway's NAT table, live in the kernel from [`GatewayNat::start`]
/// until [`GatewayNat::stop`] or drop.
///
/// Clients are reference counted, one reference per live authorisation:
/// a client's addresses enter the set with its first authorisation and
/// leave with its last. Each change is one nft transaction with only the
/// changed elements; a failed transaction changes neither the kernel nor
/// the counts.
#[derive(Debug)]
pub struct GatewayNat {
    cfg: NatConfig,
    nft: NftCommand,
    refs: HashMap<IpAddr, u32>,
    /// The DNS-resource translations in the kernel.
    dns: Desired,
    stopped: bool,
}

impl GatewayNat {
    /// Creates the table, atomically replacing one of the same name that a
    /// crashed gateway left behind.
    pub fn start(cfg: NatConfig, nft: NftCommand) -> Result<Self, NatError> {
        if cfg.table.is_empty()
            || cfg.table.len() > 64
            || !cfg
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(NatError::Config(format!("table name {:?}", cfg.table)));
        }
        check_ifname("tunnel interface", &cfg.tunnel_interface)?;
        for i in &cfg.out_interfaces {
            check_ifname("out interface", i)?;
        }
        // The NAT part and the DNS-resource part in one transaction.
        let mut batch = serde_json::to_value(ruleset::create(&cfg))
            .map_err(|e| NatError::Config(format!("encoding the table: {e}")))?;
        if let Some(cmds) = batch["nftables"].as_array_mut() {
            cmds.extend(dns_rules::create(&cfg));
        }
        nft.apply_raw(&batch, || format!("creating table inet {}", cfg.table))?;
        tracing::info!(table = %cfg.table, "NAT table created");
        Ok(Self {
            cfg,
            nft,
            refs: HashMap::new(),
            dns: Desired::default(),
            stopped: false,
        })
    }

    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    /// Addresses currently in the NAT sets.
    pub fn clients(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.refs.keys().copied()
    }

    /// Takes one reference on each address; those new to the set are added
    /// in one transaction.
    pub fn acquire(&mut self, ips: &[IpAddr]) -> Result<(), NatError> {
        let mut new: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| !self.refs.contains_key(ip))
            .collect();
        new.sort_unstable();
        new.dedup();
        self.apply(&new, &[])?;
        for ip in ips {
            *self.refs.entry(*ip).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Drops one reference on each address; those reaching zero leave the
    /// set in one transaction. Unknown addresses are ignored.
    pub fn release(&mut self, ips: &[IpAddr]) -> Result<(), NatError> {
        let mut counts = self.refs.clone();
        let mut gone = Vec::new();
        for ip in ips {
            if let Some(n) = counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(ip);
                    gone.push(*ip);
                }
            }
        }
        self.apply(&[], &gone)?;
        self.refs = counts;
        Ok(())
    }

    /// [`GatewayNat::acquire`] for a client's tunnel /32 and /128.
    pub fn add_client(&mut self, t: TunnelAddresses) -> Result<(), NatError> {
        self.acquire(&[t.ipv4.into(), t.ipv6.into()])
    }

    /// [`GatewayNat::release`] for a client's tunnel /32 and /128.
    pub fn remove_client(&mut self, t: TunnelAddresses) -> Result<(), NatError> {
        self.release(&[t.ipv4.into(), t.ipv6.into()])
    }

    fn apply(&self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), NatError> {
        if self.stopped {
            return Err(NatError::Config("NAT table already removed".into()));
        }
        match ruleset::update(&self.cfg, add, remove) {
            None => Ok(()),
            Some(batch) => self.nft.apply(&batch, || {
                format!(
                    "updating NAT clients of table inet {} (+{} -{})",
                    self.cfg.table,
                    add.len(),
                    remove.len()
                )
            }),
        }
    }

    /// Makes the DNS-resource maps hold exactly `d`, in one transaction
    /// (flush and refill: O(entries), atomic). Nothing is sent when `d` is
    /// what the kernel has.
    pub fn set_dns(&mut self, d: &Desired) -> Result<(), NatError> {
        if self.stopped {
            return Err(NatError::Config("NAT table already removed".into()));
        }
        if *d == self.dns {
            return Ok(());
        }
        self.nft.apply_raw(&dns_rules::replace(&self.cfg, d), || {
            format!(
                "setting {} DNS translations in table inet {}",
                d.translations.len(),
                self.cfg.table
            )
        })?;
        self.dns = d.clone();
        Ok(())
    }

    /// The DNS-resource translations in the kernel.
    pub fn dns(&self) -> &Desired {
        &self.dns
    }

    /// Removes the table. Also done on drop, where errors can only be
    /// logged.
    pub fn stop(mut self) -> Result<(), NatError> {
        self.remove_table()
    }

    fn remove_table(&mut self) -> Result<(), NatError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.refs.clear();
        self.nft.apply(&ruleset::delete(&self.cfg), || {
            format!("deleting table inet {}", self.cfg.table)
        })?;
        tracing::info!(table = %self.cfg.table, "NAT table removed");
        Ok(())
    }
}

impl Drop for GatewayNat {
    fn drop(&mut self) {
        if let Err(e) = self.remove_table() {
            tracing::error!(error = %e, "removing the NAT table");
        }
    }
}
