//! The root check: netns tests must fail loudly, never skip, without root.

/// Panics with "netns tests need root" unless the effective uid is 0.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "netns tests need root (creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        );
    }
}
