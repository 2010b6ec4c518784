//! Counter snapshots, summed over CPUs.

use std::fmt;

use keyhole_ebpf_common::policy::Verdict;

/// Packets per verdict since the filter was loaded.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounters {
    counts: [u64; Verdict::COUNT as usize],
}

impl VerdictCounters {
    pub(crate) fn from_counts(counts: [u64; Verdict::COUNT as usize]) -> Self {
        Self { counts }
    }

    /// Packets that got `verdict`.
    pub fn get(&self, verdict: Verdict) -> u64 {
        self.counts[verdict as usize]
    }

    /// Packets seen (every packet gets exactly one verdict).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Per-verdict differences from an earlier snapshot.
    pub fn since(&self, earlier: &VerdictCounters) -> VerdictCounters {
        let mut counts = self.counts;
        for (c, e) in counts.iter_mut().zip(earlier.counts) {
            *c = c.wrapping_sub(e);
        }
        Self { counts }
    }

    /// `(verdict, count)` for every verdict.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, u64)> + '_ {
        Verdict::ALL.iter().map(|v| (*v, self.get(*v)))
    }
}

impl fmt::Debug for VerdictCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().filter(|(_, n)| *n != 0))
            .finish()
    }
}

/// Traffic one authorisation admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationCounters {
    pub packets: u64,
    /// IP packet bytes, headers included.
    pub bytes: u64,
}
