//! Loads the fast path, attaches it, and writes the mirror's operations to
//! its maps.

use std::net::{IpAddr, SocketAddr};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::Xdp,
};
use keyhole_ebpf_common::relay::{
    CONFIG_MAP, COUNTERS_MAP, Counter, PROGRAM, RelayConfig, TO_CLIENT_V4_MAP, TO_CLIENT_V6_MAP,
    TO_PEER_V4_MAP, TO_PEER_V6_MAP, ToClientKeyV4, ToClientKeyV6, ToClientV4, ToClientV6,
    ToPeerKeyV4, ToPeerKeyV6, ToPeerV4, ToPeerV6,
};

use super::{MapOp, RELAY_EBPF, XdpError, XdpMode};

/// The fast path attached to one or more interfaces; dropping it detaches.
pub struct FastPath {
    // Owns the program and its links.
    _ebpf: Ebpf,
    to_peer: HashMap<MapData, ToPeerKeyV4, ToPeerV4>,
    to_client: HashMap<MapData, ToClientKeyV4, ToClientV4>,
    to_peer6: HashMap<MapData, ToPeerKeyV6, ToPeerV6>,
    to_client6: HashMap<MapData, ToClientKeyV6, ToClientV6>,
    attached: Vec<(String, &'static str)>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

/// Reads the fast path's per-CPU counters (shareable with /metrics).
pub struct FastPathCounters {
    counters: PerCpuArray<MapData, u64>,
}

pub(super) fn map_err(name: &'static str) -> impl Fn(MapError) -> XdpError {
    move |source| XdpError::Map { name, source }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, XdpError> {
    ebpf.take_map(name).ok_or(XdpError::Missing(name))
}

impl FastPath {
    /// Loads the program, points it at the UDP listener `listen`, and
    /// attaches it to every interface in `ifaces` (all or nothing).
    pub fn attach(
        ifaces: &[String],
        mode: XdpMode,
        listen: SocketAddr,
    ) -> Result<(Self, FastPathCounters), XdpError> {
        if ifaces.is_empty() {
            return Err(XdpError::NoInterface);
        }
        let mut ebpf = Ebpf::load(RELAY_EBPF)?;
        let to_peer = HashMap::try_from(take_map(&mut ebpf, TO_PEER_V4_MAP)?)
            .map_err(map_err(TO_PEER_V4_MAP))?;
        let to_client = HashMap::try_from(take_map(&mut ebpf, TO_CLIENT_V4_MAP)?)
            .map_err(map_err(TO_CLIENT_V4_MAP))?;
        let to_peer6 = HashMap::try_from(take_map(&mut ebpf, TO_PEER_V6_MAP)?)
            .map_err(map_err(TO_PEER_V6_MAP))?;
        let to_client6 = HashMap::try_from(take_map(&mut ebpf, TO_CLIENT_V6_MAP)?)
            .map_err(map_err(TO_CLIENT_V6_MAP))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, COUNTERS_MAP)?)
            .map_err(map_err(COUNTERS_MAP))?;
        let mut config: Array<MapData, RelayConfig> =
            Array::try_from(take_map(&mut ebpf, CONFIG_MAP)?).map_err(map_err(CONFIG_MAP))?;
        config
            .set(0, relay_config(listen), 0)
            .map_err(map_err(CONFIG_MAP))?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("keyhole_relay program"))?
            .try_into()?;
        program.load()?;
        let mut attached = Vec::new();
        for iface in ifaces {
            let used = attach_one(program, iface, mode)?;
            attached.push((iface.clone(), used));
        }
        Ok((
            FastPath {
                _ebpf: ebpf,
                to_peer,
                to_client,
                to_peer6,
                to_client6,
                attached,
            },
            FastPathCounters { counters },
        ))
    }

    /// `(interface, mode)` for each attachment.
    pub fn attached(&self) -> &[(String, &'static str)] {
        &self.attached
    }

    /// Writes one mirror operation. Removing an absent key is not an error
    /// (the program may never have had it).
    pub fn apply(&mut self, op: &MapOp) -> Result<(), XdpError> {
        match op {
            MapOp::InsertToPeer(k, v) => self
                .to_peer
                .insert(k, v, 0)
                .map_err(map_err(TO_PEER_V4_MAP)),
            MapOp::InsertToClient(k, v) => self
                .to_client
                .insert(k, v, 0)
                .map_err(map_err(TO_CLIENT_V4_MAP)),
            MapOp::RemoveToPeer(k) => {
                ignore_missing(self.to_peer.remove(k)).map_err(map_err(TO_PEER_V4_MAP))
            }
            MapOp::RemoveToClient(k) => {
                ignore_missing(self.to_client.remove(k)).map_err(map_err(TO_CLIENT_V4_MAP))
            }
            MapOp::InsertToPeerV6(k, v) => self
                .to_peer6
                .insert(k, v, 0)
                .map_err(map_err(TO_PEER_V6_MAP)),
            MapOp::InsertToClientV6(k, v) => self
                .to_client6
                .insert(k, v, 0)
                .map_err(map_err(TO_CLIENT_V6_MAP)),
            MapOp::RemoveToPeerV6(k) => {
                ignore_missing(self.to_peer6.remove(k)).map_err(map_err(TO_PEER_V6_MAP))
            }
            MapOp::RemoveToClientV6(k) => {
                ignore_missing(self.to_client6.remove(k)).map_err(map_err(TO_CLIENT_V6_MAP))
            }
        }
    }

    /// Entries in the client → peer maps (one per mirrored channel).
    pub fn channel_entries(&self) -> usize {
        self.to_peer.keys().filter(Result::is_ok).count()
            + self.to_peer6.keys().filter(Result::is_ok).count()
    }
}

/// The program's view of the listener: an IPv4 listener takes only IPv4;
/// an IPv6 one takes IPv6 (and, when it is the wildcard on a dual-stack
/// socket, IPv4 too, which the zero IPv4 address allows).
fn relay_config(listen: SocketAddr) -> RelayConfig {
    let (listen_addr, listen_v6, listen_addr6) = match listen.ip() {
        IpAddr::V4(a) => (a.octets(), 0, [0; 16]),
        IpAddr::V6(a) => ([0; 4], 1, a.octets()),
    };
    RelayConfig {
        listen_addr,
        listen_port: listen.port(),
        listen_v6,
        listen_addr6,
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

pub(super) fn attach_one(
    program: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> Result<&'static str, XdpError> {
    let mut last = None;
    for &(flags, name) in mode.attempts() {
        match program.attach(iface, flags) {
            Ok(_) => {
                tracing::info!(iface, mode = name, "XDP fast path attached");
                return Ok(name);
            }
            Err(e) => {
                tracing::debug!(iface, mode = name, error = %e, "XDP attach failed");
                last = Some(e);
            }
        }
    }
    Err(XdpError::Attach {
        iface: iface.to_owned(),
        modes: mode.describe(),
        source: last.unwrap_or(aya::programs::ProgramError::UnknownInterface {
            name: iface.to_owned(),
        }),
    })
}

impl FastPathCounters {
    /// Every counter, summed over CPUs.
    pub fn read(&self) -> Result<[u64; Counter::COUNT as usize], XdpError> {
        sum_per_cpu(&self.counters, COUNTERS_MAP)
    }
}

/// The first `N` slots of a per-CPU array, each summed over CPUs.
pub(super) fn sum_per_cpu<const N: usize>(
    map: &PerCpuArray<MapData, u64>,
    name: &'static str,
) -> Result<[u64; N], XdpError> {
    let mut out = [0u64; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0).map_err(map_err(name))?.iter().sum();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_family_decides_what_the_program_takes() {
        let c = relay_config("10.0.0.1:3478".parse().unwrap());
        assert_eq!(
            (c.listen_addr, c.listen_port, c.listen_v6),
            ([10, 0, 0, 1], 3478, 0)
        );
        let c = relay_config("[fd00::1]:3478".parse().unwrap());
        assert_eq!((c.listen_addr, c.listen_v6), ([0; 4], 1));
        assert_eq!(c.listen_addr6[0..2], [0xfd, 0]);
        assert_eq!(c.listen_addr6[15], 1);
        let c = relay_config("[::]:3478".parse().unwrap());
        assert_eq!((c.listen_v6, c.listen_addr6), (1, [0; 16]));
    }
}
