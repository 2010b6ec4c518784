//! Keyhole's eBPF programs live in this package's binaries; the library is
//! empty and exists so userspace crates can depend on the package and be
//! rebuilt when it changes.
#![no_std]
