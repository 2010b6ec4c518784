//! STUN/TURN attributes: type numbers, a borrowed typed view of each value,
//! and the value encoder.

use std::net::SocketAddr;

use crate::addr::{self, AddressFamily};
use crate::header::TransactionId;

/// Attribute type numbers (RFC 8489 §18.3, RFC 8656 §18, RFC 8445 §16.1).
pub mod types {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Types below 0x8000 must be understood by the receiver.
    pub const fn is_comprehension_required(typ: u16) -> bool {
        typ < 0x8000
    }
}

/// Longest USERNAME value (RFC 8489 §14.3).
pub const MAX_USERNAME_LEN: usize = 513;
/// Longest REALM, NONCE, SOFTWARE and error reason value (128 characters,
/// at most 763 bytes).
pub const MAX_TEXT_LEN: usize = 763;

/// A list of attribute types, borrowed from an UNKNOWN-ATTRIBUTES value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeList<'a>(&'a [u8]);

impl<'a> TypeList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}

/// One attribute, borrowing its bytes from the message it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    Username(&'a str),
    Realm(&'a str),
    Nonce(&'a str),
    ErrorCode {
        code: u16,
        reason: &'a str,
    },
    /// Owned on the encode side ([`Attribute::UnknownAttributesList`]).
    UnknownAttributes(TypeList<'a>),
    UnknownAttributesList(&'a [u16]),
    Software(&'a str),
    Lifetime(u32),
    ChannelNumber(u16),
    Data(&'a [u8]),
    RequestedTransport(u8),
    RequestedAddressFamily(AddressFamily),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode {
        family: AddressFamily,
        code: u16,
        reason: &'a str,
    },
    DontFragment,
    /// EVEN-PORT with its R (reserve next port) bit.
    EvenPort(bool),
    ReservationToken([u8; 8]),
    MessageIntegrity(&'a [u8; 20]),
    MessageIntegritySha256(&'a [u8]),
    Fingerprint(u32),
    Userhash(&'a [u8; 32]),
    PasswordAlgorithm {
        algorithm: u16,
        params: &'a [u8],
    },
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    /// Any other attribute, value uninterpreted (includes PASSWORD-ALGORITHMS).
    Other {
        typ: u16,
        value: &'a [u8],
    },
}

fn text(value: &[u8], max: usize) -> Result<&str, &'static str> {
    if value.len() > max {
        return Err("text value too long");
    }
    std::str::from_utf8(value).map_err(|_| "text value is not UTF-8")
}

fn fixed<const N: usize>(value: &[u8]) -> Result<&[u8; N], &'static str> {
    value.try_into().map_err(|_| "wrong value length")
}

fn family4(value: &[u8]) -> Result<AddressFamily, &'static str> {
    let v = fixed::<4>(value)?;
    AddressFamily::from_wire(v[0]).ok_or("unknown address family")
}

/// Splits an ERROR-CODE-shaped value into (code, reason).
fn error_code(value: &[u8]) -> Result<(u16, &str), &'static str> {
    if value.len() < 4 {
        return Err("error code shorter than 4 bytes");
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err("error code out of range");
    }
    Ok((class * 100 + number, text(&value[4..], MAX_TEXT_LEN)?))
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute value; unknown types become [`Attribute::Other`].
    pub fn decode(typ: u16, value: &'a [u8], tid: &TransactionId) -> Result<Self, &'static str> {
        use types::*;
        Ok(match typ {
            MAPPED_ADDRESS => Attribute::MappedAddress(addr::decode(value, None)?),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(addr::decode(value, Some(tid))?),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(addr::decode(value, Some(tid))?),
            XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(addr::decode(value, Some(tid))?),
            USERNAME => Attribute::Username(text(value, MAX_USERNAME_LEN)?),
            REALM => Attribute::Realm(text(value, MAX_TEXT_LEN)?),
            NONCE => Attribute::Nonce(text(value, MAX_TEXT_LEN)?),
            SOFTWARE => Attribute::Software(text(value, MAX_TEXT_LEN)?),
            ERROR_CODE => {
                let (code, reason) = error_code(value)?;
                Attribute::ErrorCode { code, reason }
            }
            ADDRESS_ERROR_CODE => {
                let family = AddressFamily::from_wire(*value.first().ok_or("empty")?)
                    .ok_or("unknown address family")?;
                let (code, reason) = error_code(value)?;
                Attribute::AddressErrorCode {
                    family,
                    code,
                    reason,
                }
            }
            UNKNOWN_ATTRIBUTES => {
                if !value.len().is_multiple_of(2) {
                    return Err("odd length");
                }
                Attribute::UnknownAttributes(TypeList(value))
            }
            LIFETIME => Attribute::Lifetime(u32::from_be_bytes(*fixed::<4>(value)?)),
            CHANNEL_NUMBER => {
                let v = fixed::<4>(value)?;
                Attribute::ChannelNumber(u16::from_be_bytes([v[0], v[1]]))
            }
            DATA => Attribute::Data(value),
            REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed::<4>(value)?[0]),
            REQUESTED_ADDRESS_FAMILY => Attribute::RequestedAddressFamily(family4(value)?),
            ADDITIONAL_ADDRESS_FAMILY => Attribute::AdditionalAddressFamily(family4(value)?),
            DONT_FRAGMENT => {
                if !value.is_empty() {
                    return Err("DONT-FRAGMENT must be empty");
                }
                Attribute::DontFragment
            }
            EVEN_PORT => Attribute::EvenPort(fixed::<1>(value)?[0] & 0x80 != 0),
            RESERVATION_TOKEN => Attribute::ReservationToken(*fixed::<8>(value)?),
            MESSAGE_INTEGRITY => Attribute::MessageIntegrity(fixed::<20>(value)?),
            MESSAGE_INTEGRITY_SHA256 => {
                if value.len() < 16 || value.len() > 32 || !value.len().is_multiple_of(4) {
                    return Err("MESSAGE-INTEGRITY-SHA256 must be 16..=32 bytes, multiple of 4");
                }
                Attribute::MessageIntegritySha256(value)
            }
            FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(*fixed::<4>(value)?)),
            USERHASH => Attribute::Userhash(fixed::<32>(value)?),
            PASSWORD_ALGORITHM => {
                if value.len() < 4 {
                    return Err("PASSWORD-ALGORITHM shorter than 4 bytes");
                }
                let algorithm = u16::from_be_bytes([value[0], value[1]]);
                let len = usize::from(u16::from_be_bytes([value[2], value[3]]));
                let params = value.get(4..4 + len).ok_or("parameters overrun")?;
                Attribute::PasswordAlgorithm { algorithm, params }
            }
            PRIORITY => Attribute::Priority(u32::from_be_bytes(*fixed::<4>(value)?)),
            USE_CANDIDATE => {
                if !value.is_empty() {
                    return Err("USE-CANDIDATE must be empty");
                }
                Attribute::UseCandidate
            }
            ICE_CONTROLLED => Attribute::IceControlled(u64::from_be_bytes(*fixed::<8>(value)?)),
            ICE_CONTROLLING => Attribute::IceControlling(u64::from_be_bytes(*fixed::<8>(value)?)),
            _ => Attribute::Other { typ, value },
        })
    }

    /// The attribute's type number.
    pub fn typ(&self) -> u16 {
        use types::*;
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::ErrorCode { .. } => ERROR_CODE,
            Attribute::UnknownAttributes(_) | Attribute::UnknownAttributesList(_) => {
                UNKNOWN_ATTRIBUTES
            }
            Attribute::Software(_) => SOFTWARE,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Data(_) => DATA,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode { .. } => ADDRESS_ERROR_CODE,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::Userhash(_) => USERHASH,
            Attribute::PasswordAlgorithm { .. } => PASSWORD_ALGORITHM,
            Attribute::Priority(_) => PRIORITY,
            Attribute::UseCandidate => USE_CANDIDATE,
            Attribute::IceControlled(_) => ICE_CONTROLLED,
            Attribute::IceControlling(_) => ICE_CONTROLLING,
            Attribute::Other { typ, .. } => *typ,
        }
    }

    /// Appends the value (without header or padding) to `out`.
    pub(crate) fn encode_value(
        &self,
        tid: &TransactionId,
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        fn push_text(out: &mut Vec<u8>, s: &str, max: usize) -> Result<(), &'static str> {
            if s.len() > max {
                return Err("text value too long");
            }
            out.extend_from_slice(s.as_bytes());
            Ok(())
        }
        fn push_error(
            out: &mut Vec<u8>,
            first: u8,
            code: u16,
            reason: &str,
        ) -> Result<(), &'static str> {
            if !(300..=699).contains(&code) {
                return Err("error code outside 300..=699");
            }
            out.extend_from_slice(&[first, 0, (code / 100) as u8, (code % 100) as u8]);
            push_text(out, reason, MAX_TEXT_LEN)
        }
        match self {
            Attribute::MappedAddress(a) => addr::encode(*a, None, out),
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => addr::encode(*a, Some(tid), out),
            Attribute::Username(s) => push_text(out, s, MAX_USERNAME_LEN)?,
            Attribute::Realm(s) | Attribute::Nonce(s) | Attribute::Software(s) => {
                push_text(out, s, MAX_TEXT_LEN)?
            }
            Attribute::ErrorCode { code, reason } => push_error(out, 0, *code, reason)?,
            Attribute::AddressErrorCode {
                family,
                code,
                reason,
            } => push_error(out, family.to_wire(), *code, reason)?,
            Attribute::UnknownAttributes(list) => out.extend_from_slice(list.0),
            Attribute::UnknownAttributesList(list) => list
                .iter()
                .for_each(|t| out.extend_from_slice(&t.to_be_bytes())),
            Attribute::Lifetime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Attribute::ChannelNumber(c) => {
                out.extend_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::Data(d) => out.extend_from_slice(d),
            Attribute::RequestedTransport(p) => out.extend_from_slice(&[*p, 0, 0, 0]),
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                out.extend_from_slice(&[f.to_wire(), 0, 0, 0])
            }
            Attribute::DontFragment | Attribute::UseCandidate => {}
            Attribute::EvenPort(r) => out.push(if *r { 0x80 } else { 0 }),
            Attribute::ReservationToken(t) => out.extend_from_slice(t),
            Attribute::MessageIntegrity(m) => out.extend_from_slice(&m[..]),
            Attribute::MessageIntegritySha256(m) => out.extend_from_slice(m),
            Attribute::Fingerprint(v) | Attribute::Priority(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Attribute::Userhash(h) => out.extend_from_slice(&h[..]),
            Attribute::PasswordAlgorithm { algorithm, params } => {
                let len = u16::try_from(params.len()).map_err(|_| "parameters too long")?;
                out.extend_from_slice(&algorithm.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(params);
                // The parameters are padded inside the value.
                out.resize(out.len() + (4 - params.len() % 4) % 4, 0);
            }
            Attribute::IceControlled(v) | Attribute::IceControlling(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Attribute::Other { value, .. } => out.extend_from_slice(value),
        }
        Ok(())
    }
}
