//! STUN (RFC 8489) and TURN (RFC 8656) for Keyhole: a zero-copy codec,
//! ChannelData framing, a datagram classifier, long-term credentials with
//! the shared-secret (coturn `use-auth-secret`) scheme, and a sans-IO TURN
//! server core ([`server::Server`]).
//!
//! Parsers never panic and never read out of bounds; every failure is a
//! typed [`DecodeError`].

mod addr;
pub mod attr;
pub mod auth;
mod builder;
mod channel_data;
mod classify;
mod error;
mod header;
mod integrity;
mod message;
pub mod server;

pub use addr::AddressFamily;
pub use attr::{Attribute, types};
pub use builder::MessageBuilder;
pub use channel_data::{CHANNEL_HEADER_LEN, CHANNEL_RANGE, ChannelData, LEGACY_CHANNEL_RANGE};
pub use classify::{PacketKind, classify, frame_len};
pub use error::{DecodeError, EncodeError, IntegrityError};
pub use header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId};
pub use integrity::FINGERPRINT_XOR;
pub use message::{IntegrityKind, Message};

/// IANA protocol number for UDP, the only REQUESTED-TRANSPORT we relay.
pub const PROTOCOL_UDP: u8 = 17;
