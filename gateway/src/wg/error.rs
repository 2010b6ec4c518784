use std::io;

/// What went wrong talking to a WireGuard backend.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// The running kernel cannot create WireGuard links (no module).
    #[error("the kernel has no WireGuard support (creating a wireguard link: {0})")]
    KernelUnsupported(String),
    /// An interface name the kernel would refuse (empty, too long, odd bytes).
    #[error("invalid interface name {0:?}: 1-15 bytes of [A-Za-z0-9_.-]")]
    InvalidName(String),
    /// A link of that name exists and is not WireGuard: not ours to replace.
    #[error("interface {0} exists and is not a WireGuard link")]
    NotWireGuard(String),
    /// The interface was torn down already.
    #[error("interface {0} was torn down")]
    TornDown(String),
    /// An rtnetlink request (link, address, route) failed.
    #[error("{what}: {source}")]
    Rtnetlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A WireGuard generic-netlink request failed.
    #[error("{what}: {source}")]
    Genetlink {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl WgError {
    pub(crate) fn rtnl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> WgError {
        let what = what.into();
        move |source| WgError::Rtnetlink { what, source }
    }

    pub(crate) fn genl(what: impl Into<String>) -> impl FnOnce(io::Error) -> WgError {
        let what = what.into();
        move |source| WgError::Genetlink { what, source }
    }
}
