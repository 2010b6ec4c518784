//! The 20-byte STUN header: message type (class + method), length, magic
//! cookie, transaction id.

use crate::error::DecodeError;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

/// STUN message class (the C1/C0 bits of the message type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A 12-bit STUN method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// A method from its 12-bit number; higher bits are dropped.
    pub const fn new(value: u16) -> Self {
        Method(value & 0x0FFF)
    }

    pub const fn value(self) -> u16 {
        self.0
    }
}

/// Class and method together, as carried in the first 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub class: Class,
    pub method: Method,
}

impl MessageType {
    pub const fn new(class: Class, method: Method) -> Self {
        MessageType { class, method }
    }

    /// Interleaves the class bits into the method bits (RFC 8489 §5).
    pub fn encode(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        ((m & 0x0F80) << 2)
            | ((m & 0x0070) << 1)
            | (m & 0x000F)
            | ((c & 0b10) << 7)
            | ((c & 0b01) << 4)
    }

    /// Inverse of [`MessageType::encode`]; the top two bits must be zero.
    pub fn decode(value: u16) -> Result<Self, DecodeError> {
        if value & 0xC000 != 0 {
            return Err(DecodeError::NotStun);
        }
        let method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80);
        let class = ((value >> 7) & 0b10) | ((value >> 4) & 0b01);
        Ok(MessageType {
            class: Class::from_bits(class),
            method: Method(method),
        })
    }
}

/// The 96-bit transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// The fixed header, decoded without looking at attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub typ: MessageType,
    /// Length of the attribute section in bytes.
    pub length: usize,
    pub transaction_id: TransactionId,
}

impl Header {
    /// Decodes the first 20 bytes; checks the zero bits, cookie and alignment
    /// but not that the buffer holds `length` more bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let head: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::Truncated {
                needed: HEADER_LEN,
                have: buf.len(),
            })?;
        let typ = MessageType::decode(u16::from_be_bytes([head[0], head[1]]))?;
        let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let cookie = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadMagicCookie(cookie));
        }
        if length % 4 != 0 {
            return Err(DecodeError::UnalignedLength(length));
        }
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&head[8..20]);
        Ok(Header {
            typ,
            length,
            transaction_id: TransactionId(tid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_for_every_class_and_method() {
        for m in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = MessageType::new(class, Method::new(m));
                assert_eq!(MessageType::decode(t.encode()).unwrap(), t);
            }
        }
    }

    #[test]
    fn known_type_values() {
        assert_eq!(
            MessageType::new(Class::Request, Method::BINDING).encode(),
            0x0001
        );
        assert_eq!(
            MessageType::new(Class::Success, Method::BINDING).encode(),
            0x0101
        );
        assert_eq!(
            MessageType::new(Class::Error, Method::ALLOCATE).encode(),
            0x0113
        );
        assert_eq!(
            MessageType::new(Class::Indication, Method::SEND).encode(),
            0x0016
        );
        assert_eq!(
            MessageType::new(Class::Indication, Method::DATA).encode(),
            0x0017
        );
    }
}
