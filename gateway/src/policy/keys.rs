//! Kernel trie keys for [`EntryKey`]s.

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use keyhole_ebpf_common::policy::{PolicyKeyV4, PolicyKeyV6};

use super::EntryKey;

/// A key of one of the two tries.
pub(crate) enum TrieKey {
    V4(Key<PolicyKeyV4>),
    V6(Key<PolicyKeyV6>),
}

impl From<EntryKey> for TrieKey {
    fn from(key: EntryKey) -> Self {
        // The table only builds keys whose client and prefix share a family.
        match (key.client, key.dst) {
            (IpAddr::V4(client), IpNet::V4(dst)) => TrieKey::V4(Key::new(
                32 + u32::from(dst.prefix_len()),
                PolicyKeyV4 {
                    client: client.octets(),
                    dst: dst.network().octets(),
                },
            )),
            (IpAddr::V6(client), IpNet::V6(dst)) => TrieKey::V6(Key::new(
                128 + u32::from(dst.prefix_len()),
                PolicyKeyV6 {
                    client: client.octets(),
                    dst: dst.network().octets(),
                },
            )),
            (client, dst) => unreachable!("family mismatch {client} {dst} passed validation"),
        }
    }
}
