//! Typed errors for decoding and encoding.

/// Why bytes could not be decoded as a STUN message or ChannelData frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("buffer too short: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("first two bits of a STUN message must be zero")]
    NotStun,
    #[error("bad magic cookie {0:#010x}")]
    BadMagicCookie(u32),
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(usize),
    #[error("message length field {declared} does not match {actual} bytes after the header")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("attribute {typ:#06x} overruns the message")]
    AttributeOverrun { typ: u16 },
    #[error("attribute {typ:#06x} has an invalid value: {reason}")]
    InvalidAttribute { typ: u16, reason: &'static str },
    #[error("attribute {typ:#06x} follows FINGERPRINT")]
    AttributeAfterFingerprint { typ: u16 },
    #[error("FINGERPRINT mismatch")]
    FingerprintMismatch,
    #[error("channel number {0:#06x} outside 0x4000..=0x7FFF")]
    BadChannelNumber(u16),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("attribute {typ:#06x} cannot be encoded: {reason}")]
    InvalidValue { typ: u16, reason: &'static str },
    #[error("message would exceed 65535 bytes of attributes")]
    MessageTooLong,
    #[error("channel number {0:#06x} outside 0x4000..=0x7FFF")]
    BadChannelNumber(u16),
}

/// Why MESSAGE-INTEGRITY verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("message has no MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256")]
    Missing,
    #[error("message integrity does not match")]
    Mismatch,
}
