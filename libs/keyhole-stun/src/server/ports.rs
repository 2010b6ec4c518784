//! Relay port allocation: the shell owns the sockets, so it decides which
//! ports can really be bound; the core only asks and gives back.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use crate::addr::AddressFamily;

/// Hands out relay ports. A shell implementation binds the relay socket
/// inside [`RelayPortAllocator::allocate`] and skips ports it cannot bind.
pub trait RelayPortAllocator {
    /// A free port on the relay address of `family`; `even` asks for an even
    /// port (EVEN-PORT). `None` means no capacity (508).
    fn allocate(&mut self, family: AddressFamily, even: bool) -> Option<u16>;
    /// An even port whose successor is also taken (EVEN-PORT with the R
    /// bit); both are released separately. `None` means no capacity.
    fn allocate_pair(&mut self, family: AddressFamily) -> Option<u16> {
        let _ = family;
        None
    }
    /// Returns a port given out by `allocate` or `allocate_pair`.
    fn release(&mut self, family: AddressFamily, port: u16);
}

/// In-memory allocator over a port range (per family), round-robin so a
/// freed port is not reused at once.
#[derive(Debug, Clone)]
pub struct PortRange {
    range: RangeInclusive<u16>,
    used: [HashSet<u16>; 2],
    next: [u16; 2],
}

impl PortRange {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let start = *range.start();
        PortRange {
            range,
            used: [HashSet::new(), HashSet::new()],
            next: [start, start],
        }
    }

    fn idx(family: AddressFamily) -> usize {
        match family {
            AddressFamily::V4 => 0,
            AddressFamily::V6 => 1,
        }
    }

    pub fn in_use(&self, family: AddressFamily) -> usize {
        self.used[Self::idx(family)].len()
    }
}

impl RelayPortAllocator for PortRange {
    fn allocate(&mut self, family: AddressFamily, even: bool) -> Option<u16> {
        let i = Self::idx(family);
        let (lo, hi) = (*self.range.start(), *self.range.end());
        if lo > hi {
            return None;
        }
        let size = u32::from(hi - lo) + 1;
        let mut port = self.next[i].clamp(lo, hi);
        for _ in 0..size {
            let candidate = port;
            port = if port == hi { lo } else { port + 1 };
            if (even && candidate % 2 != 0) || self.used[i].contains(&candidate) {
                continue;
            }
            self.used[i].insert(candidate);
            self.next[i] = port;
            return Some(candidate);
        }
        None
    }

    fn allocate_pair(&mut self, family: AddressFamily) -> Option<u16> {
        let i = Self::idx(family);
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let first = lo.next_multiple_of(2);
        let free = |p: u16| !self.used[i].contains(&p);
        let port = (first..hi).step_by(2).find(|&p| free(p) && free(p + 1))?;
        self.used[i].insert(port);
        self.used[i].insert(port + 1);
        Some(port)
    }

    fn release(&mut self, family: AddressFamily, port: u16) {
        self.used[Self::idx(family)].remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausts_and_reuses() {
        let mut p = PortRange::new(50000..=50002);
        let a = p.allocate(AddressFamily::V4, false).unwrap();
        let b = p.allocate(AddressFamily::V4, false).unwrap();
        let c = p.allocate(AddressFamily::V4, false).unwrap();
        assert_eq!((a, b, c), (50000, 50001, 50002));
        assert_eq!(p.allocate(AddressFamily::V4, false), None);
        // Families are separate port spaces.
        assert_eq!(p.allocate(AddressFamily::V6, false), Some(50000));
        p.release(AddressFamily::V4, b);
        assert_eq!(p.allocate(AddressFamily::V4, false), Some(50001));
        assert_eq!(p.allocate(AddressFamily::V4, true), None);
    }

    #[test]
    fn pairs() {
        let mut p = PortRange::new(50001..=50005);
        assert_eq!(p.allocate(AddressFamily::V4, false), Some(50001));
        assert_eq!(p.allocate_pair(AddressFamily::V4), Some(50002));
        assert_eq!(p.allocate_pair(AddressFamily::V4), Some(50004));
        assert_eq!(p.allocate_pair(AddressFamily::V4), None);
        assert_eq!(p.in_use(AddressFamily::V4), 5);
    }

    #[test]
    fn even_ports() {
        let mut p = PortRange::new(50001..=50010);
        assert_eq!(p.allocate(AddressFamily::V4, true), Some(50002));
        assert_eq!(p.allocate(AddressFamily::V4, true), Some(50004));
    }
}
