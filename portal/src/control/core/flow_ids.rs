//! Maps and sets keyed by flow id, hashed by the id's own bits.
//!
//! Flow ids are 128 random bits drawn by the portal (`start_attempt`), and
//! only those are ever inserted, so peers cannot pick colliding keys and a
//! keyed hash (SipHash) buys nothing. Each flow costs half a dozen
//! operations on these maps, and a big map's resize rehashes every key
//! under the hub's lock.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

use keyhole_proto::FlowId;

pub type FlowMap<V> = HashMap<FlowId, V, BuildHasherDefault<FlowIdHasher>>;
pub type FlowSet = HashSet<FlowId, BuildHasherDefault<FlowIdHasher>>;

/// Folds the bytes written into one word with a multiply that spreads
/// them over all bits (the map uses both the low and the high bits).
#[derive(Default)]
pub struct FlowIdHasher(u64);

impl Hasher for FlowIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(26) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher as _;

    use super::*;

    #[test]
    fn random_ids_spread_over_buckets() {
        let build = BuildHasherDefault::<FlowIdHasher>::default();
        // Low bits pick the bucket, the top 7 bits the control byte.
        let mut low = [0u32; 256];
        let mut top = [0u32; 128];
        // Ids as the portal draws them: 128 random bits.
        for _ in 0..25_600 {
            let id = FlowId::from_u128(rand::random::<u128>());
            let h = build.hash_one(id);
            low[(h & 0xff) as usize] += 1;
            top[(h >> 57) as usize] += 1;
        }
        // Means 100 and 200, standard deviations about 10 and 14.
        assert!(low.iter().all(|&n| (40..=160).contains(&n)), "{low:?}");
        assert!(top.iter().all(|&n| (115..=285).contains(&n)), "{top:?}");
    }

    #[test]
    fn maps_work_with_the_hasher() {
        let mut m: FlowMap<u32> = FlowMap::default();
        let ids: Vec<FlowId> = (1..=1000u128)
            .map(|i| FlowId::from_u128(i << 64 | i))
            .collect();
        for (n, id) in ids.iter().enumerate() {
            m.insert(*id, n as u32);
        }
        assert_eq!(m.len(), 1000);
        assert!(ids.iter().enumerate().all(|(n, id)| m[id] == n as u32));
    }
}
