//! Allocation of authorisation counter slots (indices into the per-CPU
//! counter array).

/// Hands out slot indices below `capacity`, reusing freed ones first.
#[derive(Debug)]
pub struct SlotAllocator {
    capacity: u32,
    next: u32,
    free: Vec<u32>,
}

impl SlotAllocator {
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            next: 0,
            free: Vec::new(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The slot the next [`take`](Self::take) returns, if any is free.
    pub fn peek(&self) -> Option<u32> {
        self.free
            .last()
            .copied()
            .or((self.next < self.capacity).then_some(self.next))
    }

    /// Allocates a slot.
    pub fn take(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        (self.next < self.capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Returns `slot` for reuse; it must have come from [`take`](Self::take).
    pub fn release(&mut self, slot: u32) {
        debug_assert!(slot < self.next && !self.free.contains(&slot));
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_up_to_capacity_then_reuses_freed() {
        let mut s = SlotAllocator::new(3);
        assert_eq!(s.peek(), Some(0));
        assert_eq!([s.take(), s.take(), s.take()], [Some(0), Some(1), Some(2)]);
        assert_eq!(s.peek(), None);
        assert_eq!(s.take(), None);
        s.release(1);
        assert_eq!(s.peek(), Some(1));
        assert_eq!(s.take(), Some(1));
        assert_eq!(s.take(), None);
    }
}
