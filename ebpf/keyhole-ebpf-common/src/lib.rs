//! Map key and value types shared between Keyhole's eBPF programs
//! (`keyhole-ebpf`, built for `bpfel-unknown-none`) and userspace loaders.
//!
//! Every type is `#[repr(C)]`, `Copy`, and has no implicit padding, so the
//! kernel and userspace agree on its bytes.
#![cfg_attr(not(test), no_std)]

pub mod policy;
pub mod relay;
pub mod steering;
