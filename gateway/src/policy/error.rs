//! Errors of the policy filter.

use std::net::IpAddr;

use ipnet::IpNet;

use super::AuthorizationId;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("empty port range {lo}..={hi}")]
    EmptyPortRange { lo: u16, hi: u16 },
    #[error(
        "authorisation {id}: client {client} and destination {dst} are of different IP families"
    )]
    FamilyMismatch {
        id: AuthorizationId,
        client: IpAddr,
        dst: IpNet,
    },
    #[error("authorisation {0} already exists")]
    DuplicateId(AuthorizationId),
    #[error("authorisation {0} does not exist")]
    UnknownId(AuthorizationId),
    #[error("all {capacity} authorisation counter slots are in use")]
    NoFreeSlot { capacity: u32 },
    #[error(
        "client {client} would need {count} rules for {dst} (its own and those of covering \
         prefixes), more than the {max} one filter entry holds"
    )]
    TooManyRules {
        client: IpAddr,
        dst: IpNet,
        count: usize,
        max: usize,
    },
    #[error("the {family} policy trie is full ({capacity} entries)")]
    TrieFull { family: &'static str, capacity: u32 },
    #[error("loading the policy filter eBPF program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("policy filter program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("policy filter map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning the policy filter at {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy filter object has no {0}")]
    Missing(&'static str),
    #[error(
        "updating the kernel maps failed ({source}), and so did restoring them ({rollback}); \
         the filter may deny some authorised traffic until the authorisation is re-added"
    )]
    RollbackFailed {
        #[source]
        source: Box<PolicyError>,
        rollback: Box<PolicyError>,
    },
}
