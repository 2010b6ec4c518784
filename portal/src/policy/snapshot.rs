//! The in-memory view of the store the policy engine reads.
//!
//! Built once at start-up from the store and then kept in step by applying
//! the same changes the store commits (`upsert_*` / `remove_*`), so it can
//! equally be rebuilt from scratch or updated incrementally. Removals
//! cascade like the store's foreign keys: removing a group or a resource
//! removes its policies and memberships.

use std::collections::{BTreeSet, HashMap};

use keyhole_proto::{ClientId, Resource, ResourceId};

use super::{ActorId, Conditions, GroupId, PolicyId};

/// A user or service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: ActorId,
    pub disabled: bool,
}

/// A client device and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: ClientId,
    pub owner: ActorId,
    pub disabled: bool,
}

/// Members of `group_id` may reach `resource_id` when the policy is enabled
/// and its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyId,
    pub group_id: GroupId,
    pub resource_id: ResourceId,
    pub enabled: bool,
    pub conditions: Conditions,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    actors: HashMap<ActorId, Actor>,
    groups: BTreeSet<GroupId>,
    memberships: HashMap<ActorId, BTreeSet<GroupId>>,
    resources: HashMap<ResourceId, Resource>,
    policies: HashMap<PolicyId, Policy>,
    /// Sorted so evaluation order (and so the reported reason) is stable.
    policies_by_resource: HashMap<ResourceId, BTreeSet<PolicyId>>,
    clients: HashMap<ClientId, Client>,
}

impl Snapshot {
    pub fn upsert_actor(&mut self, actor: Actor) {
        self.actors.insert(actor.id, actor);
    }

    /// Removes the actor, its memberships and its clients.
    pub fn remove_actor(&mut self, id: ActorId) {
        self.actors.remove(&id);
        self.memberships.remove(&id);
        self.clients.retain(|_, c| c.owner != id);
    }

    pub fn upsert_group(&mut self, id: GroupId) {
        self.groups.insert(id);
    }

    /// Removes the group, its memberships and its policies.
    pub fn remove_group(&mut self, id: GroupId) {
        self.groups.remove(&id);
        for groups in self.memberships.values_mut() {
            groups.remove(&id);
        }
        let doomed: Vec<_> = self
            .policies
            .values()
            .filter(|p| p.group_id == id)
            .map(|p| p.id)
            .collect();
        for p in doomed {
            self.remove_policy(p);
        }
    }

    /// Adds `actor` to `group`. Returns false if either is unknown.
    pub fn add_membership(&mut self, actor: ActorId, group: GroupId) -> bool {
        if !self.actors.contains_key(&actor) || !self.groups.contains(&group) {
            return false;
        }
        self.memberships.entry(actor).or_default().insert(group);
        true
    }

    pub fn remove_membership(&mut self, actor: ActorId, group: GroupId) {
        if let Some(groups) = self.memberships.get_mut(&actor) {
            groups.remove(&group);
        }
    }

    pub fn upsert_resource(&mut self, resource: Resource) {
        self.resources.insert(resource.id, resource);
    }

    /// Removes the resource and its policies.
    pub fn remove_resource(&mut self, id: ResourceId) {
        self.resources.remove(&id);
        if let Some(ids) = self.policies_by_resource.remove(&id) {
            for p in ids {
                self.policies.remove(&p);
            }
        }
    }

    pub fn upsert_policy(&mut self, policy: Policy) {
        if let Some(old) = self.policies.get(&policy.id)
            && old.resource_id != policy.resource_id
        {
            let old_resource = old.resource_id;
            self.unindex_policy(old_resource, policy.id);
        }
        self.policies_by_resource
            .entry(policy.resource_id)
            .or_default()
            .insert(policy.id);
        self.policies.insert(policy.id, policy);
    }

    pub fn remove_policy(&mut self, id: PolicyId) {
        if let Some(p) = self.policies.remove(&id) {
            self.unindex_policy(p.resource_id, id);
        }
    }

    fn unindex_policy(&mut self, resource: ResourceId, policy: PolicyId) {
        if let Some(set) = self.policies_by_resource.get_mut(&resource) {
            set.remove(&policy);
            if set.is_empty() {
                self.policies_by_resource.remove(&resource);
            }
        }
    }

    pub fn upsert_client(&mut self, client: Client) {
        self.clients.insert(client.id, client);
    }

    pub fn remove_client(&mut self, id: ClientId) {
        self.clients.remove(&id);
    }

    pub fn actor(&self, id: ActorId) -> Option<&Actor> {
        self.actors.get(&id)
    }

    pub fn client(&self, id: ClientId) -> Option<&Client> {
        self.clients.get(&id)
    }

    pub fn resource(&self, id: ResourceId) -> Option<&Resource> {
        self.resources.get(&id)
    }

    /// Every resource, in no particular order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.resources.values()
    }

    pub fn policy(&self, id: PolicyId) -> Option<&Policy> {
        self.policies.get(&id)
    }

    pub fn groups_of(&self, actor: ActorId) -> impl Iterator<Item = GroupId> + '_ {
        self.memberships.get(&actor).into_iter().flatten().copied()
    }

    pub fn is_member(&self, actor: ActorId, group: GroupId) -> bool {
        self.memberships
            .get(&actor)
            .is_some_and(|groups| groups.contains(&group))
    }

    /// Policies granting `resource` to any group of `actor`, in id order.
    pub fn policies_for(
        &self,
        actor: ActorId,
        resource: ResourceId,
    ) -> impl Iterator<Item = &Policy> + '_ {
        self.policies_by_resource
            .get(&resource)
            .into_iter()
            .flatten()
            .filter_map(|id| self.policies.get(id))
            .filter(move |p| self.is_member(actor, p.group_id))
    }

    /// Resources a client of `actor` should be shown: those with at least
    /// one enabled policy for one of its groups (conditions are checked
    /// when a flow is requested, since they depend on time and place).
    pub fn visible_resources(&self, actor: ActorId) -> BTreeSet<ResourceId> {
        self.policies_by_resource
            .iter()
            .filter(|(_, ids)| {
                ids.iter()
                    .filter_map(|id| self.policies.get(id))
                    .any(|p| p.enabled && self.is_member(actor, p.group_id))
            })
            .map(|(r, _)| *r)
            .filter(|r| self.resources.contains_key(r))
            .collect()
    }
}
