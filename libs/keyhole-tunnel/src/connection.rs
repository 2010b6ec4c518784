//! One peer: its ICE agent, its WireGuard tunnel, its buffer and the
//! bookkeeping that turns their states into connection events.

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};
use is::{CandidateKind, IceAgent, IceAgentEvent, IceConnectionState, IceCreds};
use keyhole_proto::{IceCandidate, IceCredentials};
use rand::RngCore;
use rand::rngs::StdRng;

use crate::buffer::PacketBuffer;
use crate::types::{Event, NodeConfig, Path, PathKind, Role, Stats, Transmit};

/// Large enough for any IP packet boringtun is handed plus its overhead.
pub(crate) const SCRATCH_LEN: usize = 65_536 + 64;

/// Node state every connection writes to; split from the connection map so
/// a connection can be borrowed mutably beside it.
pub(crate) struct Shared<K> {
    pub(crate) config: NodeConfig,
    pub(crate) rng: StdRng,
    /// Queued datagrams, tagged with their connection so removal can purge
    /// them.
    pub(crate) transmits: VecDeque<(Option<K>, Transmit<Vec<u8>>)>,
    pub(crate) events: VecDeque<Event<K>>,
    pub(crate) stats: Stats,
    pub(crate) scratch: Vec<u8>,
    /// A connection lost a relayed path: the node asks its relays whether
    /// their allocations still exist.
    pub(crate) relayed_path_lost: bool,
}

impl<K: Clone> Shared<K> {
    pub(crate) fn queue(
        &mut self,
        id: &K,
        source: SocketAddr,
        destination: SocketAddr,
        payload: Vec<u8>,
    ) {
        self.transmits.push_back((
            Some(id.clone()),
            Transmit {
                source,
                destination,
                payload,
            },
        ));
    }

    /// Fresh ICE credentials (RFC 8445 §5.3: ≥24 bits of ufrag, ≥128 bits
    /// of password randomness; 8 and 24 ice-chars of 6 bits each).
    pub(crate) fn new_credentials(&mut self) -> IceCredentials {
        const ICE_CHARS: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut draw = |n: usize| -> String {
            (0..n)
                .map(|_| ICE_CHARS[(self.rng.next_u32() % 64) as usize] as char)
                .collect()
        };
        let username = draw(8);
        let password = draw(24);
        IceCredentials::new(username, password).expect("generated credentials are valid")
    }
}

pub(crate) fn ice_creds(c: &IceCredentials) -> IceCreds {
    IceCreds {
        ufrag: c.username.clone(),
        pass: c.password.clone(),
    }
}

pub(crate) struct Connection {
    pub(crate) role: Role,
    pub(crate) agent: IceAgent,
    /// `None` for an ICE-only connection: someone else (kernel WireGuard)
    /// carries the traffic over the path ICE finds.
    pub(crate) tunn: Option<Tunn>,
    pub(crate) peer_key: [u8; 32],
    pub(crate) index: u32,
    /// A WireGuard session is confirmed in both directions.
    pub(crate) established: bool,
    /// Last handshake initiation we sent (node clock).
    pub(crate) handshake_at: Option<Instant>,
    /// ICE's nominated path; `None` before nomination and after path death.
    pub(crate) path: Option<Path>,
    /// The path last announced with `ConnectionUp`.
    pub(crate) reported: Option<Path>,
    pub(crate) buffer: PacketBuffer,
    /// Fail and remove the connection if it is not up by then.
    pub(crate) fail_at: Option<Instant>,
    /// Initiator only: restart ICE at this time if still disconnected.
    pub(crate) restart_at: Option<Instant>,
    /// We restarted ICE and wait for the peer's new credentials.
    pub(crate) awaiting_remote_credentials: bool,
    pub(crate) wireguard_tick_at: Instant,
    /// ICE is off: the path is fixed by the config (and roams).
    pub(crate) is_static: bool,
}

impl Connection {
    pub(crate) fn is_up(&self) -> bool {
        (self.established || self.tunn.is_none()) && self.path.is_some()
    }

    pub(crate) fn next_timeout(&mut self, config: &NodeConfig) -> Option<Instant> {
        let handshake = match (self.role, self.established, self.path, self.handshake_at) {
            (Role::Initiator, false, Some(_), Some(at)) => Some(at + config.handshake_retry),
            _ => None,
        };
        [
            self.agent.poll_timeout(),
            self.tunn.is_some().then_some(self.wireguard_tick_at),
            handshake,
            self.fail_at,
            self.restart_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A responder whose agent has not nominated yet takes the path of the
    /// packet that established the WireGuard session: the initiator sends
    /// over the path its ICE nominated, and the packet is authenticated.
    /// ICE's own nomination replaces it when it comes. This spares the
    /// first packet's answer the controlled side's check retransmissions
    /// (hundreds of milliseconds behind NATs).
    pub(crate) fn adopt_initiator_path(&mut self, local: SocketAddr, from: SocketAddr) {
        if self.role != Role::Responder || self.is_static || self.path.is_some() {
            return;
        }
        let kind = self.path_kind(local, from);
        tracing::debug!(%local, %from, ?kind, "answering over the initiator's path until ICE nominates");
        self.path = Some(Path {
            local,
            remote: from,
            kind,
        });
    }

    fn path_kind(&self, local: SocketAddr, remote: SocketAddr) -> PathKind {
        let local_relayed = self
            .agent
            .local_candidates()
            .any(|c| c.kind() == CandidateKind::Relayed && c.addr() == local);
        let remote_relayed = self
            .agent
            .remote_candidates()
            .any(|c| c.kind() == CandidateKind::Relayed && c.addr() == remote);
        if local_relayed || remote_relayed {
            PathKind::Relayed
        } else {
            PathKind::Direct
        }
    }

    /// Moves the agent's datagrams and events out, reacting to nomination
    /// and path death.
    pub(crate) fn drain_ice<K: Clone>(&mut self, id: &K, now: Instant, out: &mut Shared<K>) {
        if self.is_static {
            while self.agent.poll_transmit().is_some() {}
            while self.agent.poll_event().is_some() {}
            return;
        }
        while let Some(t) = self.agent.poll_transmit() {
            out.queue(id, t.source, t.destination, t.contents.into());
        }
        while let Some(e) = self.agent.poll_event() {
            match e {
                IceAgentEvent::NominatedSend {
                    source,
                    destination,
                    ..
                } => {
                    let kind = self.path_kind(source, destination);
                    tracing::debug!(?source, ?destination, ?kind, "ICE nominated a path");
                    self.path = Some(Path {
                        local: source,
                        remote: destination,
                        kind,
                    });
                    if self.role == Role::Initiator && !self.established {
                        self.start_handshake(id, now, false, out);
                    }
                    self.update_up(id, now, out);
                }
                IceAgentEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    tracing::debug!("ICE lost every path");
                    self.path = None;
                    self.update_up(id, now, out);
                    if self.role == Role::Initiator {
                        self.restart_at = Some(now);
                    }
                }
                _ => {}
            }
        }
    }

    pub(crate) fn start_handshake<K: Clone>(
        &mut self,
        id: &K,
        now: Instant,
        force: bool,
        out: &mut Shared<K>,
    ) {
        let Some(path) = self.path else { return };
        let Some(tunn) = self.tunn.as_mut() else {
            return;
        };
        match tunn.format_handshake_initiation(&mut out.scratch, force) {
            TunnResult::WriteToNetwork(d) => {
                let d = d.to_vec();
                out.queue(id, path.local, path.remote, d);
                self.handshake_at = Some(now);
            }
            TunnResult::Err(e) => {
                out.stats.wireguard_errors += 1;
                tracing::debug!(?e, "cannot start a WireGuard handshake");
            }
            _ => {}
        }
    }

    /// Announces up/down transitions and flushes the buffer once up.
    pub(crate) fn update_up<K: Clone>(&mut self, id: &K, now: Instant, out: &mut Shared<K>) {
        if self.is_up() {
            if self.reported != self.path
                && let Some(path) = self.path
            {
                self.reported = Some(path);
                self.fail_at = None;
                self.restart_at = None;
                out.events.push_back(Event::ConnectionUp {
                    conn: id.clone(),
                    path,
                });
            }
            self.flush(id, out);
        } else if let Some(was) = self.reported.take() {
            out.relayed_path_lost |= was.kind == PathKind::Relayed;
            out.events
                .push_back(Event::ConnectionDown { conn: id.clone() });
            self.fail_at = Some(now + out.config.failure_timeout);
        }
    }

    /// Sends every buffered packet; only called while up.
    pub(crate) fn flush<K: Clone>(&mut self, id: &K, out: &mut Shared<K>) {
        let Some(path) = self.path else { return };
        let Some(tunn) = self.tunn.as_mut() else {
            return;
        };
        while let Some(p) = self.buffer.pop() {
            match tunn.encapsulate(&p, &mut out.scratch) {
                TunnResult::WriteToNetwork(d) => {
                    let d = d.to_vec();
                    out.queue(id, path.local, path.remote, d);
                    out.stats.flushed += 1;
                }
                TunnResult::Err(e) => {
                    out.stats.wireguard_errors += 1;
                    tracing::debug!(?e, "cannot encrypt a buffered packet");
                }
                _ => {}
            }
        }
    }

    /// Drives boringtun's own timers (rekey, keepalive). Returns false if
    /// WireGuard gave up on the peer.
    pub(crate) fn wireguard_tick<K: Clone>(&mut self, id: &K, out: &mut Shared<K>) -> bool {
        let Some(tunn) = self.tunn.as_mut() else {
            return true;
        };
        match tunn.update_timers(&mut out.scratch) {
            TunnResult::WriteToNetwork(d) => {
                if let Some(path) = self.path {
                    let d = d.to_vec();
                    out.queue(id, path.local, path.remote, d);
                }
                true
            }
            TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => false,
            _ => true,
        }
    }

    /// Signals every local candidate of this connection (after creation or
    /// an ICE restart). Server-reflexive candidates are not added to the
    /// agent (one cannot send from them; their base is a host candidate),
    /// only announced.
    pub(crate) fn signal_candidates<K: Clone>(
        &self,
        id: &K,
        srflx: &[is::Candidate],
        out: &mut Shared<K>,
    ) {
        let ufrag = self.agent.local_credentials().ufrag.clone();
        let srflx = srflx.iter().map(|c| {
            let mut c = c.clone();
            c.set_ufrag(&ufrag);
            c
        });
        for c in self.agent.local_candidates().chain(srflx) {
            push_candidate(id, &c, out);
        }
    }
}

pub(crate) fn push_candidate<K: Clone>(id: &K, c: &is::Candidate, out: &mut Shared<K>) {
    match IceCandidate::try_from(c.to_sdp_string()) {
        Ok(candidate) => out.events.push_back(Event::LocalCandidate {
            conn: id.clone(),
            candidate,
        }),
        Err(e) => tracing::warn!(%e, "local candidate cannot be signalled"),
    }
}

/// Keeps the key type's bounds in one place.
pub trait ConnectionId: Clone + Eq + Hash + std::fmt::Debug {}
impl<T: Clone + Eq + Hash + std::fmt::Debug> ConnectionId for T {}
