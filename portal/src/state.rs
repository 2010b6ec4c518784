//! State shared by every HTTP and WebSocket handler.
//!
//! The REST API (`api/`) writes to the store and then publishes a [`Change`]
//! on [`AppState::changes`]; the control plane (`control/`) subscribes,
//! brings its in-memory policy snapshot up to date and pushes what follows
//! from it to connected gateways and clients (new resources, revocations).
//! Publishing after the commit keeps the order "stored, then announced".

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::store::Store;

/// A committed change that may affect connected gateways and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ResourceUpserted(Uuid),
    ResourceDeleted(Uuid),
    PolicyChanged(Uuid),
    PolicyDeleted(Uuid),
    GroupChanged(Uuid),
    GroupDeleted(Uuid),
    /// Group membership of an actor (user or service account) changed.
    MembershipChanged {
        group: Uuid,
        actor: Uuid,
    },
    ActorChanged(Uuid),
    ActorDeleted(Uuid),
    ClientChanged(Uuid),
    ClientDeleted(Uuid),
    SiteChanged(Uuid),
    SiteDeleted(Uuid),
    /// A token was revoked; sessions authenticated by it must end.
    TokenRevoked(Uuid),
}

/// Enough for bursts of API writes; a lagging subscriber reloads its
/// snapshot from the store instead of applying changes one by one.
pub const CHANGE_CHANNEL_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub changes: broadcast::Sender<Change>,
}

impl AppState {
    pub fn new(store: Store) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        Self { store, changes }
    }

    /// Announces a committed change. Having no subscribers is fine.
    pub fn publish(&self, change: Change) {
        let _ = self.changes.send(change);
    }
}
