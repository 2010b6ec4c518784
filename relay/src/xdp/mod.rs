//! The XDP ChannelData fast path: the eBPF object, its loader, and the
//! mirror that keeps its maps in step with the TURN core.

mod error;
mod fast_path;
mod mirror;
mod mode;
mod traffic;

pub use error::XdpError;
pub use fast_path::{FastPath, FastPathCounters};
pub use keyhole_ebpf_common::relay::Counter;
pub use mirror::{ChannelMirror, MapOp, MirrorConfig};
pub use mode::XdpMode;
pub use traffic::{LiveFrameGenerator, PassProgram, SinkProgram};

/// The compiled eBPF object holding the relay's programs.
pub static RELAY_EBPF: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keyhole-relay-xdp"));
