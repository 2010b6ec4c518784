//! Creating the TUN device the way the shell runs fastest: with the
//! virtio-net header offloads and, for more than one thread, Linux
//! multi-queue. Each falls back when the kernel refuses it.

use std::io;

use tun_rs::{DeviceBuilder, SyncDevice};

#[derive(Debug, Clone)]
pub struct TunOptions {
    pub name: String,
    pub mtu: u16,
    /// `IFF_VNET_HDR` + `TUNSETOFFLOAD` (TSO/USO, checksum offload).
    pub offload: bool,
    /// Queues (`IFF_MULTI_QUEUE` when more than one): one per shell
    /// thread.
    pub queues: usize,
}

impl TunOptions {
    pub fn new(name: impl Into<String>, mtu: u16) -> Self {
        Self {
            name: name.into(),
            mtu,
            offload: true,
            queues: 1,
        }
    }
}

/// Creates the device and returns one handle per queue. Falls back to no
/// offloads, then to a single queue, when the kernel refuses them; check
/// `tcp_gso()` and the number of handles for what was granted.
pub fn create_tun(options: &TunOptions) -> io::Result<Vec<SyncDevice>> {
    let queues = options.queues.max(1);
    let build = |offload: bool, multi_queue: bool| {
        DeviceBuilder::new()
            .name(&options.name)
            .mtu(options.mtu)
            .offload(offload)
            .multi_queue(multi_queue)
            .build_sync()
    };
    let mut attempts = vec![
        (options.offload, queues > 1),
        (false, queues > 1),
        (options.offload, false),
        (false, false),
    ];
    attempts.dedup();
    let mut last = None;
    for &(offload, multi_queue) in &attempts {
        match build(offload, multi_queue) {
            Ok(first) => {
                let mut devices = Vec::with_capacity(queues);
                if multi_queue {
                    for _ in 1..queues {
                        match first.try_clone() {
                            Ok(d) => devices.push(d),
                            Err(e) => {
                                tracing::warn!(%e, "fewer TUN queues than asked");
                                break;
                            }
                        }
                    }
                }
                devices.insert(0, first);
                if (offload, multi_queue) != attempts[0] {
                    tracing::warn!(offload, multi_queue, "TUN created with fewer features");
                }
                return Ok(devices);
            }
            Err(e) => {
                tracing::debug!(%e, offload, multi_queue, "TUN creation refused");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("TUN creation failed")))
}
