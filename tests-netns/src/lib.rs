//! Network-namespace test harness for Keyhole's end-to-end tests.
//!
//! Every test builds its own topology out of fresh namespaces: hosts,
//! NAT routers and an "internet", joined by veth pairs or by TUN devices
//! whose packets a thread copies across ([`tun_pipe`]). Nothing is ever
//! created in the root namespace, names are unique per process and test
//! (`kh-<pid>-<n>-<tag>`), so tests run in parallel, across test binaries too.
//!
//! Cleanup is layered so that no run leaves debris behind:
//! - dropping a [`Netns`] (also while unwinding from a panic) kills every
//!   process still in it and deletes it; dropping a [`Proc`] kills and reaps
//!   it; dropping a [`Tun`] closes its fd, which removes the device;
//! - spawned processes get `PR_SET_PDEATHSIG(SIGKILL)`, so they die with the
//!   test process even when it is SIGKILLed;
//! - the first [`Netns::new`] of a process sweeps `kh-<pid>-*` namespaces whose
//!   creating process is gone ([`sweep_stale_namespaces`]).
//!
//! The tests need root; [`Netns::new`] panics with "netns tests need root"
//! otherwise, so a misconfigured CI fails loudly instead of skipping.
//!
//! ```no_run
//! use keyhole_tests_netns::{Netns, veth};
//! let a = Netns::new("a")?;
//! let b = Netns::new("b")?;
//! veth(&a, "eth0", "10.0.0.1/24", &b, "eth0", "10.0.0.2/24")?;
//! a.ping("10.0.0.2".parse()?, std::time::Duration::from_secs(5))?;
//! # anyhow::Ok(())
//! ```

pub mod bench_results;
mod command;
mod link;
mod naming;
mod nat;
mod netns;
mod ping;
mod pipe;
mod proc;
mod root;
pub mod scenario;
mod spawner;
mod sweep;
mod tun;
mod wait;

pub use link::veth;
pub use naming::{unique_name, unique_suffix};
pub use nat::{
    NatKind, block_udp, blocked_udp_packets, drop_unsolicited, nat, nat_masquerade, nat_symmetric,
};
pub use netns::{DEFAULT_RUN_TIMEOUT, Netns};
pub use nix::sys::signal::Signal;
pub use pipe::{PipeHandle, PipeStats, tun_pipe};
pub use proc::Proc;
pub use root::require_root;
pub use sweep::sweep_stale_namespaces;
pub use tun::Tun;
pub use wait::{wait_for_tcp_port, wait_for_udp_listen};
