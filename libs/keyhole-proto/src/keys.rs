//! WireGuard keys on the wire: standard base64 (with padding) of 32 bytes,
//! the format `wg` prints. Preshared keys are secrets: their `Debug` never
//! shows them and their memory is wiped on drop.

use std::{fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is not valid base64")]
    Base64,
    #[error("key must be 32 bytes, got {0}")]
    Length(usize),
}

fn decode_key(s: &str) -> Result<[u8; 32], KeyError> {
    // 32 bytes are 44 base64 characters; refuse to decode anything much
    // longer so a hostile string costs nothing.
    if s.len() > 64 {
        return Err(KeyError::Length(s.len() * 3 / 4));
    }
    let mut bytes = STANDARD.decode(s).map_err(|_| KeyError::Base64)?;
    let out = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()));
    bytes.zeroize();
    out
}

/// A WireGuard (Curve25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self)
    }
}

/// A WireGuard preshared key (secret).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The base64 form, for handing to `wg` or a config file. Deliberately
    /// not `Display`, so it cannot end up in a log line by accident.
    pub fn expose_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self)
    }
}

macro_rules! serde_base64 {
    ($ty:ty, $to:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.$to())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_base64!(PublicKey, to_base64);
serde_base64!(PresharedKey, expose_base64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_round_trips_through_base64() {
        let k = PublicKey::from_bytes([7; 32]);
        let s = k.to_string();
        assert_eq!(s.len(), 44);
        assert_eq!(s.parse::<PublicKey>().unwrap(), k);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), k);
    }

    #[test]
    fn wrong_length_and_garbage_are_rejected() {
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
        assert_eq!(
            "!!!notbase64!!!".parse::<PublicKey>(),
            Err(KeyError::Base64)
        );
        let long = "A".repeat(10_000);
        assert!(long.parse::<PublicKey>().is_err());
        assert!(serde_json::from_str::<PresharedKey>("\"AAAA\"").is_err());
        assert!(serde_json::from_str::<PresharedKey>("12").is_err());
    }

    #[test]
    fn preshared_key_debug_is_redacted() {
        let k = PresharedKey::from_bytes([0xAB; 32]);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.expose_base64()), "{dbg}");
        assert!(dbg.contains("redacted"));
        // ... but it still travels on the wire.
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", k.expose_base64()));
        assert_eq!(serde_json::from_str::<PresharedKey>(&json).unwrap(), k);
    }
}
