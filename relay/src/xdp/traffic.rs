//! XDP programs the tests and benchmarks put around a relay: a pass-all
//! program that lets a veth end receive redirected frames, a sink that
//! counts and drops, and a live-frame generator.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::Xdp,
};
use keyhole_ebpf_common::relay::{
    PASS_PROGRAM, SINK_COUNTERS_MAP, SINK_PROGRAM, TX_PROGRAM, TX_TEMPLATE_MAP, TX_TEMPLATE_WORDS,
};

use super::fast_path::{attach_one, map_err, sum_per_cpu};
use super::{RELAY_EBPF, XdpError, XdpMode};

fn load(name: &'static str) -> Result<Ebpf, XdpError> {
    let mut ebpf = Ebpf::load(RELAY_EBPF)?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(XdpError::Missing(name))?
        .try_into()?;
    program.load()?;
    Ok(ebpf)
}

fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    mode: XdpMode,
) -> Result<&'static str, XdpError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(XdpError::Missing(name))?
        .try_into()?;
    attach_one(program, iface, mode)
}

/// An XDP program that passes everything, for the far end of a veth: in
/// native mode a veth only receives XDP_TX/redirected frames when its peer
/// runs XDP. Dropping it detaches.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl PassProgram {
    pub fn attach(iface: &str, mode: XdpMode) -> Result<(Self, &'static str), XdpError> {
        let mut ebpf = load(PASS_PROGRAM)?;
        let used = attach(&mut ebpf, PASS_PROGRAM, iface, mode)?;
        Ok((PassProgram { _ebpf: ebpf }, used))
    }
}

/// Counts UDP datagrams and their payload bytes arriving on an interface
/// and drops them; everything else passes, STUN included (so a TURN client
/// behind it keeps its control exchange). Dropping it detaches.
pub struct SinkProgram {
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
}

impl SinkProgram {
    pub fn attach(iface: &str, mode: XdpMode) -> Result<(Self, &'static str), XdpError> {
        let mut ebpf = load(SINK_PROGRAM)?;
        let used = attach(&mut ebpf, SINK_PROGRAM, iface, mode)?;
        let map = ebpf
            .take_map(SINK_COUNTERS_MAP)
            .ok_or(XdpError::Missing(SINK_COUNTERS_MAP))?;
        let counters = PerCpuArray::try_from(map).map_err(map_err(SINK_COUNTERS_MAP))?;
        Ok((
            SinkProgram {
                _ebpf: ebpf,
                counters,
            },
            used,
        ))
    }

    /// (datagrams, payload bytes) counted so far, summed over CPUs.
    pub fn read(&self) -> Result<(u64, u64), XdpError> {
        let [packets, bytes] = sum_per_cpu(&self.counters, SINK_COUNTERS_MAP)?;
        Ok((packets, bytes))
    }
}

/// The kernel's XDP traffic generator (BPF_PROG_TEST_RUN with
/// `BPF_F_TEST_XDP_LIVE_FRAMES`, Linux ≥ 5.18) driving a program that
/// returns XDP_TX: each run sends one Ethernet frame `repeat` times out of
/// an interface as page-pool frames, the way a NIC's receive path hands
/// frames to XDP, so a veth's far end gets them without an skb or socket.
pub struct LiveFrameGenerator {
    ebpf: Ebpf,
    frame: Vec<u8>,
}

/// `BPF_PROG_TEST_RUN`'s part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md`, the context passed in.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per batch the kernel sends before flushing (its maximum is 256).
/// Bursts overflow a veth's 256-frame receive ring when the receiver's NAPI
/// on another core is slower, as a NIC ring would; with the program parked
/// (see [`LiveFrameGenerator::park`]) 64 offers more than a relay core
/// takes (measured: 3.5 M frames/s offered, 2.7 M relayed by the fast path
/// at 98 % of its core; batches of 8 offered 2.5 M).
const LIVE_BATCH: u32 = 64;

impl LiveFrameGenerator {
    /// Loads the program for sending `frame` (Ethernet header included,
    /// at least the template's length).
    pub fn new(frame: Vec<u8>) -> Result<Self, XdpError> {
        let need = TX_TEMPLATE_WORDS * 8;
        if frame.len() < need {
            return Err(XdpError::FrameTooShort {
                len: frame.len(),
                need,
            });
        }
        let mut ebpf = load(TX_PROGRAM)?;
        let mut template = [0u64; TX_TEMPLATE_WORDS];
        for (w, b) in template.iter_mut().zip(frame.chunks_exact(8)) {
            *w = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        }
        let mut map: Array<_, [u64; TX_TEMPLATE_WORDS]> = ebpf
            .map_mut(TX_TEMPLATE_MAP)
            .ok_or(XdpError::Missing(TX_TEMPLATE_MAP))?
            .try_into()
            .map_err(map_err(TX_TEMPLATE_MAP))?;
        map.set(0, template, 0).map_err(map_err(TX_TEMPLATE_MAP))?;
        Ok(LiveFrameGenerator { ebpf, frame })
    }

    /// Keeps the program attached (generic mode) to `iface`, a device that
    /// carries no traffic, until the generator is dropped. Every test run
    /// otherwise adds the program to the kernel's XDP dispatcher and
    /// removes it again, and each change waits for an RCU grace period:
    /// measured, that left the generating core idle half the time.
    pub fn park(&mut self, iface: &str) -> Result<(), XdpError> {
        attach(&mut self.ebpf, TX_PROGRAM, iface, XdpMode::Generic).map(|_| ())
    }

    /// Sends the frame `repeat` times out of the interface with index
    /// `ifindex` in the calling thread's network namespace. Blocks until
    /// done; frames the receiver has no room for are dropped by it, as a
    /// NIC ring would.
    pub fn send(&self, ifindex: u32, repeat: u32) -> std::io::Result<()> {
        let frame = &self.frame;
        let program: &Xdp = self
            .ebpf
            .program(TX_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| std::io::Error::other("keyhole_xdp_tx program missing"))?;
        let fd = program.fd().map_err(std::io::Error::other)?;
        let ctx = XdpMd {
            data_end: frame.len() as u32,
            ingress_ifindex: ifindex,
            ..Default::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: fd.as_fd().as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
            ctx_in: (&ctx as *const XdpMd) as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: LIVE_BATCH,
            ..Default::default()
        };
        // SAFETY: the attr and the buffers it points at outlive the call;
        // the kernel reads at most `size` bytes of attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                std::mem::size_of::<TestRunAttr>() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
