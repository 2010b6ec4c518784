//! STUN steering on the uplink: lets the gateway's ICE agent share the
//! UDP port the kernel's WireGuard owns (see the README, "Kernel backend +
//! ICE").
//!
//! Two TC programs (`keyhole-ebpf`'s `gateway_steering`): on ingress, STUN
//! (and, if enabled, TURN ChannelData) sent to the WireGuard port is
//! readdressed to the ICE socket's port; on egress, UDP from the ICE
//! socket leaves with the WireGuard port as its source. [`StunSteering`]
//! loads and attaches them; dropping it detaches both.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
};
use keyhole_ebpf_common::steering::{
    MAX_STEERING_ADDRS, STEER_CHANNEL_DATA, STEERING_ADDRS_MAP, STEERING_CONFIG_MAP,
    STEERING_COUNTERS_MAP, SteeringConfig, SteeringCounter, addr_key_v4,
};

/// The compiled eBPF object holding the steering programs.
pub static STEERING_EBPF: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keyhole-gateway-steering"));

const INGRESS: &str = "keyhole_steer_in";
const EGRESS: &str = "keyhole_steer_out";

#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error("loading the steering eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("steering program {name} on {interface}: {source}")]
    Program {
        name: &'static str,
        interface: String,
        source: ProgramError,
    },
    #[error("steering map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("{0} missing from the steering object")]
    Missing(&'static str),
    #[error("bad steering ports: WireGuard {wg_port}, ICE {ice_port} (non-zero and distinct)")]
    BadPorts { wg_port: u16, ice_port: u16 },
    #[error("steering needs 1 to {max} local addresses, got {got}")]
    BadAddresses { got: usize, max: u32 },
}

/// What the programs steer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteeringPorts {
    /// The kernel WireGuard's listen port.
    pub wg_port: u16,
    /// The userspace ICE socket's port.
    pub ice_port: u16,
    /// Steer TURN ChannelData too (relayed peers through a local proxy).
    pub channel_data: bool,
}

/// Packets the programs handled since they were loaded, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteeringCounters {
    pub ingress_stun: u64,
    pub ingress_channel_data: u64,
    pub ingress_wireguard: u64,
    pub egress_rewritten: u64,
    pub errors: u64,
}

/// The steering programs attached to one uplink interface.
pub struct StunSteering {
    interface: String,
    ports: SteeringPorts,
    config: Array<MapData, SteeringConfig>,
    // Written once at attach; kept so the map lives as long as the programs.
    _addrs: HashMap<MapData, [u8; 16], u8>,
    counters: PerCpuArray<MapData, u64>,
    // Owns the programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for StunSteering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunSteering")
            .field("interface", &self.interface)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl StunSteering {
    /// Loads the programs, writes `ports` and the `local` addresses whose
    /// traffic is steered (ingress to them, egress from them; forwarded
    /// traffic is never touched), and attaches them to `interface` (an
    /// Ethernet device: the uplink the WireGuard traffic arrives on), in
    /// the calling thread's network namespace. TCX links on kernels ≥ 6.6,
    /// a clsact qdisc with netlink filters before.
    pub fn attach(
        interface: &str,
        ports: SteeringPorts,
        local: &[IpAddr],
    ) -> Result<Self, SteeringError> {
        if ports.wg_port == 0 || ports.ice_port == 0 || ports.wg_port == ports.ice_port {
            return Err(SteeringError::BadPorts {
                wg_port: ports.wg_port,
                ice_port: ports.ice_port,
            });
        }
        if local.is_empty() || local.len() > MAX_STEERING_ADDRS as usize {
            return Err(SteeringError::BadAddresses {
                got: local.len(),
                max: MAX_STEERING_ADDRS,
            });
        }
        let mut ebpf = Ebpf::load(STEERING_EBPF)?;
        let mut addrs: HashMap<MapData, [u8; 16], u8> = HashMap::try_from(
            ebpf.take_map(STEERING_ADDRS_MAP)
                .ok_or(SteeringError::Missing(STEERING_ADDRS_MAP))?,
        )
        .map_err(map_err(STEERING_ADDRS_MAP))?;
        for ip in local {
            let key = match ip {
                IpAddr::V4(v4) => addr_key_v4(v4.octets()),
                IpAddr::V6(v6) => v6.octets(),
            };
            addrs
                .insert(key, 1, 0)
                .map_err(map_err(STEERING_ADDRS_MAP))?;
        }
        let mut config: Array<MapData, SteeringConfig> = Array::try_from(
            ebpf.take_map(STEERING_CONFIG_MAP)
                .ok_or(SteeringError::Missing(STEERING_CONFIG_MAP))?,
        )
        .map_err(map_err(STEERING_CONFIG_MAP))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(STEERING_COUNTERS_MAP)
                .ok_or(SteeringError::Missing(STEERING_COUNTERS_MAP))?,
        )
        .map_err(map_err(STEERING_COUNTERS_MAP))?;
        // Configured before any packet can reach the programs.
        config
            .set(0, to_config(ports), 0)
            .map_err(map_err(STEERING_CONFIG_MAP))?;
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        if !tcx {
            // Netlink filters need the clsact qdisc; one may exist already.
            if let Err(e) = tc::qdisc_add_clsact(interface) {
                tracing::debug!(interface, error = %e, "clsact qdisc (may exist already)");
            }
        }
        for (name, dir) in [
            (INGRESS, TcAttachType::Ingress),
            (EGRESS, TcAttachType::Egress),
        ] {
            let prog_err = |source| SteeringError::Program {
                name,
                interface: interface.to_owned(),
                source,
            };
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(SteeringError::Missing(name))?
                .try_into()
                .map_err(prog_err)?;
            program.load().map_err(prog_err)?;
            program.attach(interface, dir).map_err(prog_err)?;
        }
        tracing::info!(
            interface,
            wg_port = ports.wg_port,
            ice_port = ports.ice_port,
            channel_data = ports.channel_data,
            "STUN steering attached"
        );
        Ok(Self {
            interface: interface.to_owned(),
            ports,
            config,
            _addrs: addrs,
            counters,
            _ebpf: ebpf,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn ports(&self) -> SteeringPorts {
        self.ports
    }

    /// Changes what is steered, atomically for the programs (one map write).
    pub fn set_ports(&mut self, ports: SteeringPorts) -> Result<(), SteeringError> {
        self.config
            .set(0, to_config(ports), 0)
            .map_err(map_err(STEERING_CONFIG_MAP))?;
        self.ports = ports;
        Ok(())
    }

    pub fn counters(&self) -> Result<SteeringCounters, SteeringError> {
        let mut sums = [0u64; SteeringCounter::COUNT as usize];
        for c in SteeringCounter::ALL {
            let values = self
                .counters
                .get(&(c as u32), 0)
                .map_err(map_err(STEERING_COUNTERS_MAP))?;
            sums[c as usize] = values.iter().sum();
        }
        Ok(SteeringCounters {
            ingress_stun: sums[SteeringCounter::IngressStun as usize],
            ingress_channel_data: sums[SteeringCounter::IngressChannelData as usize],
            ingress_wireguard: sums[SteeringCounter::IngressWireGuard as usize],
            egress_rewritten: sums[SteeringCounter::EgressRewritten as usize],
            errors: sums[SteeringCounter::Error as usize],
        })
    }
}

fn to_config(p: SteeringPorts) -> SteeringConfig {
    SteeringConfig {
        wg_port: p.wg_port,
        ice_port: p.ice_port,
        flags: if p.channel_data {
            STEER_CHANNEL_DATA
        } else {
            0
        },
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> SteeringError {
    move |source| SteeringError::Map { name, source }
}
