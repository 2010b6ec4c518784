//! Bounded packet queue for connections that cannot send yet.

use std::collections::VecDeque;

/// FIFO of whole IP packets; when full the oldest is dropped (a fresh
/// packet is worth more than a stale one to TCP and to DNS retries).
#[derive(Debug)]
pub(crate) struct PacketBuffer {
    packets: VecDeque<Vec<u8>>,
    capacity: usize,
    dropped: u64,
}

impl PacketBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            packets: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Queues a copy of `packet`; returns true if an older packet (or, at
    /// capacity 0, this one) was dropped to make room.
    pub(crate) fn push(&mut self, packet: &[u8]) -> bool {
        if self.capacity == 0 {
            self.dropped += 1;
            return true;
        }
        let mut dropped = false;
        if self.packets.len() >= self.capacity {
            self.packets.pop_front();
            self.dropped += 1;
            dropped = true;
        }
        self.packets.push_back(packet.to_vec());
        dropped
    }

    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.packets.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_and_counts() {
        let mut b = PacketBuffer::new(2);
        assert!(!b.push(&[1]));
        assert!(!b.push(&[2]));
        assert!(b.push(&[3]));
        assert_eq!(b.dropped(), 1);
        assert_eq!(b.pop(), Some(vec![2]));
        assert_eq!(b.pop(), Some(vec![3]));
        assert_eq!(b.pop(), None);
        let mut z = PacketBuffer::new(0);
        assert!(z.push(&[1]));
        assert_eq!((z.len(), z.dropped()), (0, 1));
    }
}
