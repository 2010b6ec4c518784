//! The IO shell: loads the program, attaches it, and writes the table's
//! plans to the kernel maps.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{
        LinkOrder, ProgramInfo, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use keyhole_ebpf_common::policy::{
    AUTH_COUNTERS_MAP, AuthCounter, DEFAULT_MAX_ENTRIES, LEASE_MAP, POLICY_V4_MAP, POLICY_V6_MAP,
    PolicyKeyV4, PolicyKeyV6, RuleSet, VERDICT_COUNTERS_MAP, Verdict,
};
use std::path::{Path, PathBuf};

use super::{
    Authorization, AuthorizationCounters, AuthorizationId, Change, GATEWAY_EBPF, MapOp,
    PolicyError, PolicyTable, VerdictCounters, keys::TrieKey, lease::Lease, pin,
};

/// Name of the classifier in the object.
const PROGRAM: &str = "keyhole_policy";

/// The policy filter attached to one interface's ingress. Dropping it
/// detaches the program (and frees its maps).
///
/// The TCX link is pinned in bpffs, so a gateway killed without running
/// its drop leaves the filter attached: the interface keeps denying all
/// but what was authorised at the time (fail closed). The next
/// [`attach`](Self::attach) on the same interface and namespace replaces
/// it with no unfiltered moment.
pub struct PolicyFilter {
    interface: String,
    link: Option<FilterLink>,
    pin_path: PathBuf,
    // Owns the program.
    ebpf: Ebpf,
    v4: LpmTrie<MapData, PolicyKeyV4, RuleSet>,
    v6: LpmTrie<MapData, PolicyKeyV6, RuleSet>,
    verdicts: PerCpuArray<MapData, u64>,
    auth_counters: PerCpuArray<MapData, AuthCounter>,
    table: PolicyTable,
    cpus: usize,
    // Held for its drop, which stops the renewals.
    _lease: Lease,
}

impl std::fmt::Debug for PolicyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFilter")
            .field("interface", &self.interface)
            .field("authorizations", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl PolicyFilter {
    /// Loads the filter with room for [`DEFAULT_MAX_ENTRIES`] authorisations
    /// and attaches it to `interface`'s ingress. With no authorisations yet
    /// it drops every packet.
    pub fn attach(interface: &str) -> Result<Self, PolicyError> {
        Self::attach_with_capacity(interface, DEFAULT_MAX_ENTRIES)
    }

    /// As [`attach`](Self::attach), sizing each trie and the counter slots
    /// for `capacity` entries (per-CPU counters cost 16 bytes × CPUs each).
    pub fn attach_with_capacity(interface: &str, capacity: u32) -> Result<Self, PolicyError> {
        Self::attach_pinned(interface, capacity, Path::new(pin::DEFAULT_PIN_DIR))
    }

    /// As [`attach_with_capacity`](Self::attach_with_capacity), pinning the
    /// link below `pin_dir` (a bpffs directory).
    pub fn attach_pinned(
        interface: &str,
        capacity: u32,
        pin_dir: &Path,
    ) -> Result<Self, PolicyError> {
        let pin_path = pin::pin_path(pin_dir, interface)?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(POLICY_V4_MAP, capacity)
            .map_max_entries(POLICY_V6_MAP, capacity)
            .map_max_entries(AUTH_COUNTERS_MAP, capacity)
            .load(GATEWAY_EBPF)?;
        let v4 = LpmTrie::try_from(take_map(&mut ebpf, POLICY_V4_MAP)?)
            .map_err(map_err(POLICY_V4_MAP))?;
        let v6 = LpmTrie::try_from(take_map(&mut ebpf, POLICY_V6_MAP)?)
            .map_err(map_err(POLICY_V6_MAP))?;
        let verdicts = PerCpuArray::try_from(take_map(&mut ebpf, VERDICT_COUNTERS_MAP)?)
            .map_err(map_err(VERDICT_COUNTERS_MAP))?;
        let auth_counters = PerCpuArray::try_from(take_map(&mut ebpf, AUTH_COUNTERS_MAP)?)
            .map_err(map_err(AUTH_COUNTERS_MAP))?;
        let lease_map: Array<MapData, u64> =
            Array::try_from(take_map(&mut ebpf, LEASE_MAP)?).map_err(map_err(LEASE_MAP))?;
        // Renewed from here on; set before the program can see a packet.
        let lease = Lease::start(lease_map)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| PolicyError::Map {
            name: AUTH_COUNTERS_MAP,
            source: MapError::IoError(e),
        })?;

        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or(PolicyError::Missing("keyhole_policy program"))?
            .try_into()?;
        program.load()?;
        // A filter a crashed run left pinned stays attached until ours runs
        // in front of it (first in the TCX chain, deciding every packet).
        let stale = pin::take_stale(&pin_path);
        let link = match attach_and_pin(program, interface, &pin_path, stale.is_some()) {
            Ok(link) => link,
            Err(e) => {
                // Leave the old filter in place rather than nothing.
                if let Some(old) = stale
                    && let Err(pe) = old.pin(&pin_path)
                {
                    tracing::error!(error = %pe, "re-pinning the stale filter failed; it detaches");
                }
                return Err(e);
            }
        };
        // Ours runs first now; the old one detaches as its last fd closes.
        drop(stale);
        tracing::info!(interface, capacity, pin = %pin_path.display(), "policy filter attached");
        Ok(Self {
            interface: interface.to_owned(),
            link: Some(link),
            pin_path,
            ebpf,
            v4,
            v6,
            verdicts,
            auth_counters,
            table: PolicyTable::new(capacity, capacity),
            cpus,
            _lease: lease,
        })
    }

    /// Where the filter's link is pinned (`None` for a netlink filter).
    pub fn pin_path(&self) -> Option<&Path> {
        matches!(self.link, Some(FilterLink::Pinned(_))).then_some(self.pin_path.as_path())
    }

    /// The interface the filter is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// What the kernel says about the loaded program (id, verified
    /// instruction count, translated size), as `bpftool prog show` lists it.
    pub fn program_info(&self) -> Option<ProgramInfo> {
        let program: &SchedClassifier = self.ebpf.program(PROGRAM)?.try_into().ok()?;
        program.info().ok()
    }

    /// Ids of the TCX programs on `interface`'s ingress (in the calling
    /// thread's network namespace): a check that the filter is in place.
    pub fn ingress_program_ids(interface: &str) -> Result<Vec<u32>, PolicyError> {
        let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress)?;
        Ok(programs.iter().map(ProgramInfo::id).collect())
    }

    /// The authorisations in force.
    pub fn table(&self) -> &PolicyTable {
        &self.table
    }

    /// Admits `auth`'s traffic. Safe while traffic flows: nothing that was
    /// allowed is dropped during the update. On error the filter is as before.
    ///
    /// To change an authorisation (ports, prefix), add the new one under a
    /// new id and then remove the old: each step alone never interrupts a
    /// flow both allow, whereas remove-then-add would.
    pub fn add_authorization(&mut self, auth: Authorization) -> Result<(), PolicyError> {
        let change = self.table.plan_add(auth)?;
        self.apply(change)?;
        tracing::debug!(id = %auth.id, client = %auth.client_ip, dst = %auth.dst, "authorisation added");
        Ok(())
    }

    /// Revokes authorisation `id`; its traffic is dropped once this returns,
    /// other authorisations' traffic is never interrupted.
    pub fn remove_authorization(&mut self, id: AuthorizationId) -> Result<(), PolicyError> {
        let change = self.table.plan_remove(id)?;
        self.apply(change)?;
        tracing::debug!(%id, "authorisation removed");
        Ok(())
    }

    /// Packets per verdict, summed over CPUs.
    pub fn counters(&self) -> Result<VerdictCounters, PolicyError> {
        let mut counts = [0u64; Verdict::COUNT as usize];
        for (i, count) in counts.iter_mut().enumerate() {
            let values = self
                .verdicts
                .get(&(i as u32), 0)
                .map_err(map_err(VERDICT_COUNTERS_MAP))?;
            *count = values.iter().sum();
        }
        Ok(VerdictCounters::from_counts(counts))
    }

    /// Traffic admitted by authorisation `id` since it was added.
    pub fn authorization_counters(
        &self,
        id: AuthorizationId,
    ) -> Result<AuthorizationCounters, PolicyError> {
        let slot = self.table.slot(id).ok_or(PolicyError::UnknownId(id))?;
        let values = self
            .auth_counters
            .get(&slot, 0)
            .map_err(map_err(AUTH_COUNTERS_MAP))?;
        Ok(values
            .iter()
            .fold(AuthorizationCounters::default(), |acc, c| {
                AuthorizationCounters {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }
            }))
    }

    /// Writes `change` to the kernel, undoing what was written if a write
    /// fails, and commits it to the table on success.
    fn apply(&mut self, change: Change) -> Result<(), PolicyError> {
        if let Some(slot) = change.fresh_slot {
            // A reused slot still holds its previous owner's counts.
            let zeros =
                PerCpuValues::try_from(vec![AuthCounter::default(); self.cpus]).map_err(|e| {
                    PolicyError::Map {
                        name: AUTH_COUNTERS_MAP,
                        source: MapError::IoError(e),
                    }
                })?;
            self.auth_counters
                .set(slot, zeros, 0)
                .map_err(map_err(AUTH_COUNTERS_MAP))?;
        }
        for (applied, op) in change.ops.iter().enumerate() {
            if let Err(err) = self.write(op) {
                for undo in change.rollback(applied) {
                    if let Err(rollback) = self.write(&undo) {
                        return Err(PolicyError::RollbackFailed {
                            source: Box::new(err),
                            rollback: Box::new(rollback),
                        });
                    }
                }
                return Err(err);
            }
        }
        self.table.commit(change);
        Ok(())
    }

    fn write(&mut self, op: &MapOp) -> Result<(), PolicyError> {
        match op {
            MapOp::Upsert { key, value, .. } => match TrieKey::from(*key) {
                TrieKey::V4(k) => self.v4.insert(&k, value, 0).map_err(map_err(POLICY_V4_MAP)),
                TrieKey::V6(k) => self.v6.insert(&k, value, 0).map_err(map_err(POLICY_V6_MAP)),
            },
            MapOp::Delete { key, .. } => match TrieKey::from(*key) {
                TrieKey::V4(k) => self.v4.remove(&k).map_err(map_err(POLICY_V4_MAP)),
                TrieKey::V6(k) => self.v6.remove(&k).map_err(map_err(POLICY_V6_MAP)),
            },
        }
    }
}

/// Attaches `program` to `interface`'s ingress (first in the chain when
/// `in_front`, to take over from a stale filter) and pins the link.
fn attach_and_pin(
    program: &mut SchedClassifier,
    interface: &str,
    pin_path: &Path,
    in_front: bool,
) -> Result<FilterLink, PolicyError> {
    let tcx = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    if !tcx {
        // A netlink filter needs the clsact qdisc (it may exist already).
        if let Err(e) = aya::programs::tc::qdisc_add_clsact(interface) {
            tracing::debug!(interface, error = %e, "clsact qdisc (may exist already)");
        }
    }
    let link_id = if in_front {
        tracing::info!(interface, pin = %pin_path.display(), "replacing a stale policy filter");
        program.attach_with_options(
            interface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )?
    } else {
        program.attach(interface, TcAttachType::Ingress)?
    };
    let link = program.take_link(link_id)?;
    if <&FdLink>::try_from(&link).is_err() {
        // Kernels without TCX get a netlink (clsact) filter: it stays
        // attached after the process dies by itself.
        return Ok(FilterLink::Netlink(link));
    }
    let pin_err = |e: &dyn std::fmt::Display| PolicyError::Pin {
        path: pin_path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let fd = FdLink::try_from(link).map_err(|e| pin_err(&e))?;
    let pinned = fd.pin(pin_path).map_err(|e| pin_err(&e))?;
    Ok(FilterLink::Pinned(pinned))
}

/// How the program is attached.
#[derive(Debug)]
enum FilterLink {
    /// A TCX link pinned in bpffs (kernels ≥ 6.6).
    Pinned(PinnedLink),
    /// A netlink (clsact) filter; it outlives the process by itself.
    Netlink(SchedClassifierLink),
}

impl Drop for PolicyFilter {
    /// A clean exit takes the filter off the interface: the pin goes, and
    /// with the last reference to the link the program detaches.
    fn drop(&mut self) {
        match self.link.take() {
            Some(FilterLink::Pinned(p)) => {
                if let Err(e) = p.unpin() {
                    tracing::warn!(pin = %self.pin_path.display(), error = %e, "removing the filter pin");
                }
            }
            Some(FilterLink::Netlink(l)) => drop(l),
            None => {}
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, PolicyError> {
    ebpf.take_map(name).ok_or(PolicyError::Missing(name))
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> PolicyError {
    move |source| PolicyError::Map { name, source }
}
