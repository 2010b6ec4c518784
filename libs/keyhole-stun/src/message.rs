//! Zero-copy STUN message parser.

use std::net::SocketAddr;

use crate::addr::AddressFamily;
use crate::attr::{Attribute, types};
use crate::error::{DecodeError, IntegrityError};
use crate::header::{Class, HEADER_LEN, Header, Method, TransactionId};
use crate::integrity;

/// Which integrity attribute verified a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

/// A parsed STUN message borrowing its bytes.
///
/// Attributes after MESSAGE-INTEGRITY (other than MESSAGE-INTEGRITY-SHA256
/// and FINGERPRINT) are ignored as RFC 8489 §14.5 requires; a FINGERPRINT,
/// when present, has been checked.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    header: Header,
    attrs: Vec<Attribute<'a>>,
    unknown_required: Vec<u16>,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header and its value length.
    integrity_sha256: Option<(usize, usize)>,
    fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Parses a whole message; `buf` must hold exactly one message.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let header = Header::decode(buf)?;
        let actual = buf.len() - HEADER_LEN;
        if header.length != actual {
            return Err(DecodeError::LengthMismatch {
                declared: header.length,
                actual,
            });
        }
        let tid = header.transaction_id;
        let mut msg = Message {
            raw: buf,
            header,
            attrs: Vec::new(),
            unknown_required: Vec::new(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: false,
        };
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            let head = buf.get(pos..pos + 4).ok_or(DecodeError::Truncated {
                needed: pos + 4,
                have: buf.len(),
            })?;
            let typ = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = buf
                .get(pos + 4..pos + 4 + len)
                .ok_or(DecodeError::AttributeOverrun { typ })?;
            let next = pos + 4 + len.next_multiple_of(4);
            if next > buf.len() {
                return Err(DecodeError::AttributeOverrun { typ });
            }
            if msg.fingerprint {
                return Err(DecodeError::AttributeAfterFingerprint { typ });
            }
            let ignored = match typ {
                types::FINGERPRINT => false,
                types::MESSAGE_INTEGRITY_SHA256 => msg.integrity_sha256.is_some(),
                _ => msg.integrity.is_some() || msg.integrity_sha256.is_some(),
            };
            if !ignored {
                let attr = Attribute::decode(typ, value, &tid)
                    .map_err(|reason| DecodeError::InvalidAttribute { typ, reason })?;
                match attr {
                    Attribute::MessageIntegrity(_) => msg.integrity = Some(pos),
                    Attribute::MessageIntegritySha256(v) => {
                        msg.integrity_sha256 = Some((pos, v.len()))
                    }
                    Attribute::Fingerprint(fp) => {
                        // The length field already ends at FINGERPRINT since it must be last.
                        if integrity::fingerprint(&[&buf[..pos]]) != fp {
                            return Err(DecodeError::FingerprintMismatch);
                        }
                        msg.fingerprint = true;
                    }
                    Attribute::Other { typ, .. }
                        if types::is_comprehension_required(typ)
                            && !msg.unknown_required.contains(&typ) =>
                    {
                        msg.unknown_required.push(typ)
                    }
                    _ => {}
                }
                msg.attrs.push(attr);
            }
            pos = next;
        }
        Ok(msg)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn class(&self) -> Class {
        self.header.typ.class
    }

    pub fn method(&self) -> Method {
        self.header.typ.method
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.header.transaction_id
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// All attributes that were not ignored, in wire order.
    pub fn attributes(&self) -> &[Attribute<'a>] {
        &self.attrs
    }

    /// The first attribute of type `typ` (later duplicates are ignored).
    pub fn get(&self, typ: u16) -> Option<&Attribute<'a>> {
        self.attrs.iter().find(|a| a.typ() == typ)
    }

    /// Unknown comprehension-required attribute types (answer 420 to a request).
    pub fn unknown_required(&self) -> &[u16] {
        &self.unknown_required
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY,
    /// with `key` (the password for short-term, MD5(user:realm:pass) for
    /// long-term credentials).
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, IntegrityError> {
        let h = &self.raw[..HEADER_LEN];
        if let Some((pos, len)) = self.integrity_sha256 {
            let length = ((pos + 4 + len - HEADER_LEN) as u16).to_be_bytes();
            let mac = integrity::hmac_sha256(
                key,
                &[&h[..2], &length, &h[4..], &self.raw[HEADER_LEN..pos]],
            );
            let got = &self.raw[pos + 4..pos + 4 + len];
            return if integrity::ct_eq(&mac[..len], got) {
                Ok(IntegrityKind::Sha256)
            } else {
                Err(IntegrityError::Mismatch)
            };
        }
        let pos = self.integrity.ok_or(IntegrityError::Missing)?;
        let length = ((pos + 24 - HEADER_LEN) as u16).to_be_bytes();
        let mac = integrity::hmac_sha1(
            key,
            &[&h[..2], &length, &h[4..], &self.raw[HEADER_LEN..pos]],
        );
        if integrity::ct_eq(&mac, &self.raw[pos + 4..pos + 24]) {
            Ok(IntegrityKind::Sha1)
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    // Typed accessors for the attributes a TURN server reads.

    pub fn username(&self) -> Option<&'a str> {
        match self.get(types::USERNAME) {
            Some(Attribute::Username(u)) => Some(u),
            _ => None,
        }
    }

    pub fn realm(&self) -> Option<&'a str> {
        match self.get(types::REALM) {
            Some(Attribute::Realm(r)) => Some(r),
            _ => None,
        }
    }

    pub fn nonce(&self) -> Option<&'a str> {
        match self.get(types::NONCE) {
            Some(Attribute::Nonce(n)) => Some(n),
            _ => None,
        }
    }

    pub fn lifetime(&self) -> Option<u32> {
        match self.get(types::LIFETIME) {
            Some(Attribute::Lifetime(l)) => Some(*l),
            _ => None,
        }
    }

    pub fn channel_number(&self) -> Option<u16> {
        match self.get(types::CHANNEL_NUMBER) {
            Some(Attribute::ChannelNumber(c)) => Some(*c),
            _ => None,
        }
    }

    pub fn data(&self) -> Option<&'a [u8]> {
        match self.get(types::DATA) {
            Some(Attribute::Data(d)) => Some(d),
            _ => None,
        }
    }

    pub fn requested_transport(&self) -> Option<u8> {
        match self.get(types::REQUESTED_TRANSPORT) {
            Some(Attribute::RequestedTransport(p)) => Some(*p),
            _ => None,
        }
    }

    pub fn requested_address_family(&self) -> Option<AddressFamily> {
        match self.get(types::REQUESTED_ADDRESS_FAMILY) {
            Some(Attribute::RequestedAddressFamily(f)) => Some(*f),
            _ => None,
        }
    }

    pub fn additional_address_family(&self) -> Option<AddressFamily> {
        match self.get(types::ADDITIONAL_ADDRESS_FAMILY) {
            Some(Attribute::AdditionalAddressFamily(f)) => Some(*f),
            _ => None,
        }
    }

    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        match self.get(types::ERROR_CODE) {
            Some(Attribute::ErrorCode { code, reason }) => Some((*code, reason)),
            _ => None,
        }
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        match self.get(types::XOR_MAPPED_ADDRESS) {
            Some(Attribute::XorMappedAddress(a)) => Some(*a),
            _ => None,
        }
    }

    /// Every XOR-RELAYED-ADDRESS (two for a dual-stack allocation).
    pub fn xor_relayed_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.attrs.iter().filter_map(|a| match a {
            Attribute::XorRelayedAddress(x) => Some(*x),
            _ => None,
        })
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.attrs.iter().filter_map(|a| match a {
            Attribute::XorPeerAddress(x) => Some(*x),
            _ => None,
        })
    }
}
