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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_put_the_client_first_and_count_its_bits() {
        let key = |client: &str, dst: &str| {
            TrieKey::from(EntryKey {
                client: client.parse().unwrap(),
                dst: dst.parse().unwrap(),
            })
        };
        let TrieKey::V4(k) = key("100.64.0.2", "10.0.1.0/24") else {
            panic!("not v4")
        };
        assert_eq!(k.prefix_len(), 56);
        assert_eq!(
            k.data(),
            PolicyKeyV4 {
                client: [100, 64, 0, 2],
                dst: [10, 0, 1, 0]
            }
        );
        let TrieKey::V6(k) = key("fd00:64::2", "fd00:1::/64") else {
            panic!("not v6")
        };
        assert_eq!(k.prefix_len(), 192);
        assert_eq!(k.data().client[..2], [0xfd, 0x00]);
        assert_eq!(k.data().dst[..4], [0xfd, 0x00, 0x00, 0x01]);
    }
}
