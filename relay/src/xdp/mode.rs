//! `--xdp-mode`.

use std::fmt;
use std::str::FromStr;

use aya::programs::XdpMode as AttachMode;

/// How the fast path attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Driver mode; fail if the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works on every device, slower.
    Generic,
    /// No fast path: everything is relayed in userspace.
    Off,
    /// Native, else generic.
    #[default]
    Auto,
}

impl XdpMode {
    /// Attach flags to try, in order.
    pub(crate) fn attempts(self) -> &'static [(AttachMode, &'static str)] {
        const NATIVE: (AttachMode, &str) = (AttachMode::Driver, "native");
        const GENERIC: (AttachMode, &str) = (AttachMode::Skb, "generic");
        match self {
            XdpMode::Native => &[NATIVE],
            XdpMode::Generic => &[GENERIC],
            XdpMode::Off => &[],
            XdpMode::Auto => &[NATIVE, GENERIC],
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Off => "off",
            XdpMode::Auto => "native, generic",
        }
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            "off" => Ok(XdpMode::Off),
            "auto" => Ok(XdpMode::Auto),
            other => Err(format!(
                "unknown XDP mode {other:?} (native, generic, off, auto)"
            )),
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Off => "off",
            XdpMode::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for m in [
            XdpMode::Native,
            XdpMode::Generic,
            XdpMode::Off,
            XdpMode::Auto,
        ] {
            assert_eq!(m.to_string().parse::<XdpMode>(), Ok(m));
        }
        assert!("fast".parse::<XdpMode>().is_err());
        assert_eq!(XdpMode::Auto.attempts().len(), 2);
        assert!(XdpMode::Off.attempts().is_empty());
    }
}
