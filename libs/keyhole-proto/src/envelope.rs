//! The frame format: every WebSocket text frame is one JSON envelope.
//!
//! ```json
//! {"v":1,"type":"request_flow","id":7,"payload":{…}}
//! {"v":1,"type":"flow_created","reply_to":7,"payload":{…}}
//! ```
//!
//! - `v`: major protocol version, [`PROTOCOL_VERSION`]. Additive changes
//!   (new message types, new optional fields) keep it; a peer receiving
//!   another version closes with [`CLOSE_PROTOCOL_ERROR`].
//! - `type`: the message type, snake_case.
//! - `id`: set on requests (a per-connection counter chosen by the sender).
//!   The receiver answers with `reply_to` set to it. Repeating a request
//!   with the same id yields the same answer (the portal remembers recent
//!   answers per connection), so a sender may retry after a lost reply.
//! - `payload`: an object; an absent payload reads as `{}`.
//! - Unknown envelope and payload fields are ignored (forward compatible).
//!
//! Decoding tells apart three outcomes: a known message; an unknown type
//! ([`Decoded::Unknown`], which a receiver logs and ignores, so newer peers
//! can add messages); and an error ([`DecodeError`]) naming the offending
//! field, with the WebSocket close code to use when the connection cannot go
//! on ([`DecodeError::close_code`]).

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer, de::DeserializeOwned};
use serde_json::value::RawValue;

/// Major version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted (bytes). A gateway `init` with a few thousand
/// resources is well under this.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Close code when a frame exceeds [`MAX_FRAME_BYTES`] (RFC 6455 §7.4.1
/// "Message Too Big").
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// Close code when the peer does not speak this protocol: not an envelope,
/// or another major version (RFC 6455 "Protocol Error").
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;

/// Close code when the peer's credentials are refused or revoked (RFC 6455
/// "Policy Violation").
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;

/// Identifies a request within one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<M> {
    /// Set on requests.
    pub id: Option<RequestId>,
    /// Set on replies: the `id` of the request answered.
    pub reply_to: Option<RequestId>,
    pub message: M,
}

/// A family of messages for one direction of one kind of connection.
/// Implemented by the `messages!` macro; see [`crate::messages`].
pub trait Message: Sized {
    /// Every `type` this family understands.
    const TYPES: &'static [&'static str];
    fn type_name(&self) -> &'static str;
    fn serialize_payload<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    /// `None` when `type_name` is not one of [`Self::TYPES`].
    fn decode_payload(type_name: &str, payload: &str) -> Option<Result<Self, PayloadError>>;
}

/// What a frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<M> {
    Known(Envelope<M>),
    /// A well-formed envelope of a type this build does not know: log and
    /// ignore it.
    Unknown {
        type_name: String,
        id: Option<RequestId>,
    },
}

/// A known message whose payload does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at `{path}`: {message}")]
pub struct PayloadError {
    /// Dotted path of the offending field (`.` for the payload itself).
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a control-protocol envelope: {0}")]
    Envelope(String),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    #[error("invalid `{type_name}` message {source}")]
    Payload {
        type_name: String,
        /// The request id, so the receiver can answer with an error.
        id: Option<RequestId>,
        #[source]
        source: PayloadError,
    },
}

impl DecodeError {
    /// The WebSocket close code to use, or `None` when the connection
    /// should go on (the message is dropped, answered with an `error` reply
    /// if it carried an id).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::TooLarge { .. } => Some(CLOSE_MESSAGE_TOO_BIG),
            Self::Envelope(_) | Self::UnsupportedVersion(_) => Some(CLOSE_PROTOCOL_ERROR),
            Self::Payload { .. } => None,
        }
    }
}

impl<M: Message> Envelope<M> {
    /// A notification (neither request nor reply).
    pub fn new(message: M) -> Self {
        Self {
            id: None,
            reply_to: None,
            message,
        }
    }

    pub fn request(id: RequestId, message: M) -> Self {
        Self {
            id: Some(id),
            reply_to: None,
            message,
        }
    }

    pub fn reply(to: RequestId, message: M) -> Self {
        Self {
            id: None,
            reply_to: Some(to),
            message,
        }
    }

    /// The frame text.
    pub fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&WireOut {
            v: PROTOCOL_VERSION,
            type_name: self.message.type_name(),
            id: self.id,
            reply_to: self.reply_to,
            payload: PayloadRef(&self.message),
        })
    }
}

#[derive(Serialize)]
#[serde(bound = "")]
struct WireOut<'a, M: Message> {
    v: u32,
    #[serde(rename = "type")]
    type_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<RequestId>,
    payload: PayloadRef<'a, M>,
}

struct PayloadRef<'a, M>(&'a M);

impl<M: Message> Serialize for PayloadRef<'_, M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_payload(s)
    }
}

#[derive(Deserialize)]
struct WireIn<'a> {
    v: u32,
    #[serde(rename = "type", borrow)]
    type_name: Cow<'a, str>,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default)]
    reply_to: Option<RequestId>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// Decode one frame (the bytes of a WebSocket text frame).
pub fn decode<M: Message>(frame: &[u8]) -> Result<Decoded<M>, DecodeError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let wire: WireIn<'_> =
        serde_json::from_slice(frame).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    if wire.v != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(wire.v));
    }
    let payload = wire.payload.map_or("{}", RawValue::get);
    match M::decode_payload(&wire.type_name, payload) {
        None => Ok(Decoded::Unknown {
            type_name: wire.type_name.into_owned(),
            id: wire.id,
        }),
        Some(Ok(message)) => Ok(Decoded::Known(Envelope {
            id: wire.id,
            reply_to: wire.reply_to,
            message,
        })),
        Some(Err(source)) => Err(DecodeError::Payload {
            type_name: wire.type_name.into_owned(),
            id: wire.id,
            source,
        }),
    }
}

/// Deserialize a payload, recording the path of a failing field.
pub fn decode_payload_as<T: DeserializeOwned>(json: &str) -> Result<T, PayloadError> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| PayloadError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Defines a message family: an enum with one payload type per variant and
/// its [`Message`] implementation.
macro_rules! messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $wire:literal => $variant:ident($payload:ty), )*
        }
    ) => {
        $(#[$meta])*
        // Messages are decoded, matched and dropped; boxing the big ones
        // would only add allocations.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($payload), )*
        }

        impl $crate::envelope::Message for $name {
            const TYPES: &'static [&'static str] = &[$($wire),*];

            fn type_name(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $wire, )*
                }
            }

            fn serialize_payload<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Self::$variant(p) => serde::Serialize::serialize(p, s), )*
                }
            }

            fn decode_payload(
                type_name: &str,
                payload: &str,
            ) -> Option<Result<Self, $crate::envelope::PayloadError>> {
                match type_name {
                    $( $wire => Some(
                        $crate::envelope::decode_payload_as::<$payload>(payload).map(Self::$variant)
                    ), )*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use messages;
