//! The sans-IO core of the policy filter: the set of authorisations, and the
//! trie writes that take the kernel from one set to the next.
//!
//! An LPM trie returns one entry, so each entry `(client, prefix)` carries
//! the rules of its own prefix followed by those of every covering prefix of
//! the same client ("push-down"), most specific first. Adding or removing an
//! authorisation at `P` rewrites the entry at `P` and every entry of that
//! client inside `P`.
//!
//! Changes are planned against the current state ([`PolicyTable::plan_add`],
//! [`PolicyTable::plan_remove`]), written by the IO shell in order, then
//! committed ([`PolicyTable::commit`]). Upserts come before deletes: while a
//! plan is half-written, a flow allowed both before and after the change
//! finds its rule in whichever entry the lookup returns (each entry ever
//! present holds, old or new, every rule of every prefix covering it that
//! exists on both sides), so no authorised flow is dropped mid-update.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use keyhole_ebpf_common::policy::{MAX_RULES, Rule, RuleSet};

use super::{Authorization, AuthorizationId, PolicyError, slots::SlotAllocator};

/// One trie entry: a client and a destination prefix (canonical form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    pub client: IpAddr,
    pub dst: IpNet,
}

/// One write to a trie. `previous` is what the entry held, so a partly
/// applied plan can be undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    Upsert {
        key: EntryKey,
        value: RuleSet,
        previous: Option<RuleSet>,
    },
    Delete {
        key: EntryKey,
        previous: RuleSet,
    },
}

impl MapOp {
    /// The write that undoes this one.
    pub fn inverse(&self) -> MapOp {
        match *self {
            MapOp::Upsert {
                key,
                value,
                previous: Some(previous),
            } => MapOp::Upsert {
                key,
                value: previous,
                previous: Some(value),
            },
            MapOp::Upsert {
                key,
                value,
                previous: None,
            } => MapOp::Delete {
                key,
                previous: value,
            },
            MapOp::Delete { key, previous } => MapOp::Upsert {
                key,
                value: previous,
                previous: None,
            },
        }
    }
}

/// A planned change: write `ops` in order (after zeroing `fresh_slot`'s
/// counters, if any), then [`PolicyTable::commit`] it.
#[derive(Debug)]
#[must_use = "a plan does nothing until written and committed"]
pub struct Change {
    pub ops: Vec<MapOp>,
    /// A newly allocated counter slot whose old counts must be cleared.
    pub fresh_slot: Option<u32>,
    kind: ChangeKind,
}

impl Change {
    /// The writes undoing the first `applied` ops, in the order to apply them.
    pub fn rollback(&self, applied: usize) -> Vec<MapOp> {
        self.ops[..applied]
            .iter()
            .rev()
            .map(MapOp::inverse)
            .collect()
    }
}

#[derive(Debug)]
enum ChangeKind {
    Add(Stored),
    Remove(AuthorizationId),
}

#[derive(Clone, Copy, Debug)]
struct Stored {
    auth: Authorization,
    slot: u32,
}

/// Prefixes of one client, each with its authorisations in insertion order.
type ClientPrefixes = BTreeMap<IpNet, Vec<AuthorizationId>>;

/// An overlay on the current state: the plan's pending add or removal.
#[derive(Clone, Copy)]
enum Pending<'a> {
    None,
    Add(&'a Stored),
    Remove(AuthorizationId),
}

/// The authorisations the filter enforces and their slots.
#[derive(Debug)]
pub struct PolicyTable {
    auths: HashMap<AuthorizationId, Stored>,
    clients: HashMap<IpAddr, ClientPrefixes>,
    slots: SlotAllocator,
    trie_capacity: u32,
    entries_v4: u32,
    entries_v6: u32,
}

impl PolicyTable {
    /// A table for tries of `trie_capacity` entries each and `slots` counter slots.
    pub fn new(trie_capacity: u32, slots: u32) -> Self {
        Self {
            auths: HashMap::new(),
            clients: HashMap::new(),
            slots: SlotAllocator::new(slots),
            trie_capacity,
            entries_v4: 0,
            entries_v6: 0,
        }
    }

    /// Number of authorisations.
    pub fn len(&self) -> usize {
        self.auths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }

    /// The authorisation `id`, in canonical form.
    pub fn get(&self, id: AuthorizationId) -> Option<&Authorization> {
        self.auths.get(&id).map(|s| &s.auth)
    }

    /// The counter slot of authorisation `id`.
    pub fn slot(&self, id: AuthorizationId) -> Option<u32> {
        self.auths.get(&id).map(|s| s.slot)
    }

    /// Number of trie entries (IPv4, IPv6).
    pub fn entries(&self) -> (u32, u32) {
        (self.entries_v4, self.entries_v6)
    }

    /// Plans adding `auth`.
    pub fn plan_add(&self, auth: Authorization) -> Result<Change, PolicyError> {
        let auth = auth.normalized()?;
        if self.auths.contains_key(&auth.id) {
            return Err(PolicyError::DuplicateId(auth.id));
        }
        let slot = self.slots.peek().ok_or(PolicyError::NoFreeSlot {
            capacity: self.slots.capacity(),
        })?;
        let stored = Stored { auth, slot };
        let prefixes = self.clients.get(&auth.client_ip);
        let is_new_entry = prefixes.is_none_or(|p| !p.contains_key(&auth.dst));
        if is_new_entry {
            let (used, family) = self.family_entries(auth.dst);
            if used >= self.trie_capacity {
                return Err(PolicyError::TrieFull {
                    family,
                    capacity: self.trie_capacity,
                });
            }
        }
        let mut ops = Vec::new();
        for dst in affected(prefixes, auth.dst) {
            let key = EntryKey {
                client: auth.client_ip,
                dst,
            };
            let previous = (dst != auth.dst || !is_new_entry)
                .then(|| self.rule_set(key, Pending::None))
                .transpose()?;
            let value = self.rule_set(key, Pending::Add(&stored))?;
            ops.push(MapOp::Upsert {
                key,
                value,
                previous,
            });
        }
        Ok(Change {
            ops,
            fresh_slot: Some(slot),
            kind: ChangeKind::Add(stored),
        })
    }

    /// Plans removing authorisation `id`.
    pub fn plan_remove(&self, id: AuthorizationId) -> Result<Change, PolicyError> {
        let stored = self.auths.get(&id).ok_or(PolicyError::UnknownId(id))?;
        let auth = stored.auth;
        let prefixes = self.clients.get(&auth.client_ip);
        let last_at_prefix = prefixes
            .and_then(|p| p.get(&auth.dst))
            .is_some_and(|ids| ids.len() == 1);
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for dst in affected(prefixes, auth.dst) {
            let key = EntryKey {
                client: auth.client_ip,
                dst,
            };
            let previous = self.rule_set(key, Pending::None)?;
            if dst == auth.dst && last_at_prefix {
                deletes.push(MapOp::Delete { key, previous });
            } else {
                let value = self.rule_set(key, Pending::Remove(id))?;
                upserts.push(MapOp::Upsert {
                    key,
                    value,
                    previous: Some(previous),
                });
            }
        }
        upserts.extend(deletes);
        Ok(Change {
            ops: upserts,
            fresh_slot: None,
            kind: ChangeKind::Remove(id),
        })
    }

    /// Records a change whose ops the kernel accepted. `change` must have
    /// been planned against the current state.
    pub fn commit(&mut self, change: Change) {
        match change.kind {
            ChangeKind::Add(stored) => {
                let taken = self.slots.take();
                debug_assert_eq!(taken, Some(stored.slot));
                let auth = stored.auth;
                let ids = self
                    .clients
                    .entry(auth.client_ip)
                    .or_default()
                    .entry(auth.dst)
                    .or_default();
                let new_entry = ids.is_empty();
                ids.push(auth.id);
                if new_entry {
                    *self.family_entries_mut(auth.dst) += 1;
                }
                self.auths.insert(auth.id, stored);
            }
            ChangeKind::Remove(id) => {
                let Some(stored) = self.auths.remove(&id) else {
                    return;
                };
                let auth = stored.auth;
                let mut entry_gone = false;
                if let Some(prefixes) = self.clients.get_mut(&auth.client_ip) {
                    if let Some(ids) = prefixes.get_mut(&auth.dst) {
                        ids.retain(|i| *i != id);
                        if ids.is_empty() {
                            prefixes.remove(&auth.dst);
                            entry_gone = true;
                        }
                    }
                    if prefixes.is_empty() {
                        self.clients.remove(&auth.client_ip);
                    }
                }
                if entry_gone {
                    *self.family_entries_mut(auth.dst) -= 1;
                }
                self.slots.release(stored.slot);
            }
        }
    }

    fn family_entries(&self, dst: IpNet) -> (u32, &'static str) {
        match dst {
            IpNet::V4(_) => (self.entries_v4, "IPv4"),
            IpNet::V6(_) => (self.entries_v6, "IPv6"),
        }
    }

    fn family_entries_mut(&mut self, dst: IpNet) -> &mut u32 {
        match dst {
            IpNet::V4(_) => &mut self.entries_v4,
            IpNet::V6(_) => &mut self.entries_v6,
        }
    }

    /// The value of entry `key`: rules of `key.dst` and of every covering
    /// prefix of the client, most specific first, with `pending` applied.
    fn rule_set(&self, key: EntryKey, pending: Pending<'_>) -> Result<RuleSet, PolicyError> {
        let prefixes = self.clients.get(&key.client);
        let mut set = RuleSet::default();
        let mut count = 0usize;
        let mut push = |stored: &Stored| {
            if count < MAX_RULES {
                set.rules[count] = rule(stored);
            }
            count += 1;
        };
        for len in (0..=key.dst.prefix_len()).rev() {
            let Ok(net) = IpNet::new(key.dst.addr(), len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(ids) = prefixes.and_then(|p| p.get(&net)) {
                for id in ids {
                    if matches!(pending, Pending::Remove(r) if r == *id) {
                        continue;
                    }
                    if let Some(stored) = self.auths.get(id) {
                        push(stored);
                    }
                }
            }
            if let Pending::Add(stored) = pending
                && stored.auth.dst == net
            {
                push(stored);
            }
        }
        if count > MAX_RULES {
            return Err(PolicyError::TooManyRules {
                client: key.client,
                dst: key.dst,
                count,
                max: MAX_RULES,
            });
        }
        set.len = count as u32;
        Ok(set)
    }
}

/// `dst` itself and every prefix of the client strictly inside it.
fn affected(prefixes: Option<&ClientPrefixes>, dst: IpNet) -> Vec<IpNet> {
    let mut out = vec![dst];
    if let Some(prefixes) = prefixes {
        // Ordered by (address, length): everything inside `dst` follows it
        // and has an address no greater than its broadcast address.
        let last = dst.broadcast();
        out.extend(
            prefixes
                .range(dst..)
                .map(|(net, _)| *net)
                .take_while(|net| net.addr() <= last && net.addr().is_ipv4() == last.is_ipv4())
                .filter(|net| *net != dst && dst.contains(net)),
        );
    }
    out
}

fn rule(stored: &Stored) -> Rule {
    Rule {
        slot: stored.slot,
        port_lo: stored.auth.ports.lo(),
        port_hi: stored.auth.ports.hi(),
        proto: stored.auth.proto.to_kernel(),
        _pad: [0; 3],
    }
}

#[cfg(test)]
mod tests;
