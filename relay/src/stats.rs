//! Userspace counters, shared between the event loop and /metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the userspace relay handled. Byte counts of relayed data are
/// application bytes (ChannelData or DATA payloads), comparable with the
/// fast path's.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams read from the UDP listener.
    pub client_datagrams: AtomicU64,
    /// Of those, ChannelData.
    pub client_channel_data: AtomicU64,
    /// Datagrams read from relay sockets (peers).
    pub peer_datagrams: AtomicU64,
    /// Data relayed to peers (from ChannelData or Send indications).
    pub to_peer_packets: AtomicU64,
    pub to_peer_bytes: AtomicU64,
    /// Peer data relayed to clients (as ChannelData or Data indications).
    pub to_client_packets: AtomicU64,
    pub to_client_bytes: AtomicU64,
    /// Allocations held now.
    pub allocations: AtomicU64,
    /// Channels mirrored into the fast path now.
    pub xdp_channels: AtomicU64,
    /// Fast-path map writes that failed (those channels stay in userspace).
    pub xdp_map_errors: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
