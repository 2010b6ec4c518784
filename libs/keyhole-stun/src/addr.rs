//! Address attribute values (MAPPED-ADDRESS and the XOR-* variants).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::header::{MAGIC_COOKIE, TransactionId};

pub(crate) const FAMILY_IPV4: u8 = 0x01;
pub(crate) const FAMILY_IPV6: u8 = 0x02;

/// An address family as carried by REQUESTED-ADDRESS-FAMILY and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        }
    }

    pub(crate) fn to_wire(self) -> u8 {
        match self {
            AddressFamily::V4 => FAMILY_IPV4,
            AddressFamily::V6 => FAMILY_IPV6,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Option<Self> {
        match v {
            FAMILY_IPV4 => Some(AddressFamily::V4),
            FAMILY_IPV6 => Some(AddressFamily::V6),
            _ => None,
        }
    }
}

/// XOR mask over port and address (RFC 8489 §14.2): the cookie, and for
/// IPv6 the cookie followed by the transaction id.
fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&tid.0);
    mask
}

pub(crate) fn decode(
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, &'static str> {
    if value.len() < 4 {
        return Err("address shorter than 4 bytes");
    }
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    let mask = xor.map(xor_mask);
    if mask.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match value[1] {
        FAMILY_IPV4 => {
            let raw: [u8; 4] = value[4..]
                .try_into()
                .map_err(|_| "IPv4 address must be 4 bytes")?;
            let mut b = raw;
            if let Some(m) = mask {
                b.iter_mut().zip(m.iter()).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        FAMILY_IPV6 => {
            let raw: [u8; 16] = value[4..]
                .try_into()
                .map_err(|_| "IPv6 address must be 16 bytes")?;
            let mut b = raw;
            if let Some(m) = mask {
                b.iter_mut().zip(m.iter()).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err("unknown address family"),
    };
    Ok(SocketAddr::new(ip, port))
}

pub(crate) fn encode(addr: SocketAddr, xor: Option<&TransactionId>, out: &mut Vec<u8>) {
    let mask = xor.map(xor_mask);
    let mut port = addr.port();
    if mask.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out.push(0);
    out.push(AddressFamily::of(addr.ip()).to_wire());
    out.extend_from_slice(&port.to_be_bytes());
    let mut ip = [0u8; 16];
    let n = match addr.ip() {
        IpAddr::V4(v4) => {
            ip[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            ip.copy_from_slice(&v6.octets());
            16
        }
    };
    if let Some(m) = mask {
        ip.iter_mut().zip(m.iter()).for_each(|(x, k)| *x ^= k);
    }
    out.extend_from_slice(&ip[..n]);
}
