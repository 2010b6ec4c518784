//! Message encoder: appends attributes, keeps the length field current and
//! computes MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.

use crate::attr::{Attribute, types};
use crate::error::EncodeError;
use crate::header::{HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId};
use crate::integrity;

#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: TransactionId,
    padding: u8,
}

impl MessageBuilder {
    pub fn new(typ: MessageType, tid: TransactionId) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&typ.encode().to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageBuilder {
            buf,
            tid,
            padding: 0,
        }
    }

    /// Byte used to pad attribute values (any value is allowed; RFC 5769's
    /// vectors use 0x20).
    pub fn padding_byte(mut self, byte: u8) -> Self {
        self.padding = byte;
        self
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    fn set_length(&mut self, attrs_len: usize) -> Result<(), EncodeError> {
        let len = u16::try_from(attrs_len).map_err(|_| EncodeError::MessageTooLong)?;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Appends one attribute. MESSAGE-INTEGRITY and FINGERPRINT given here are
    /// copied verbatim; use the `add_*` methods to compute them.
    pub fn add(&mut self, attr: &Attribute<'_>) -> Result<&mut Self, EncodeError> {
        let typ = attr.typ();
        let start = self.buf.len();
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        let res = attr
            .encode_value(&self.tid, &mut self.buf)
            .map_err(|reason| EncodeError::InvalidValue { typ, reason })
            .and_then(|()| {
                let len = self.buf.len() - start - 4;
                u16::try_from(len).map_err(|_| EncodeError::InvalidValue {
                    typ,
                    reason: "value longer than 65535 bytes",
                })
            })
            .and_then(|len| {
                self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
                let padded = self.buf.len().next_multiple_of(4);
                self.buf.resize(padded, self.padding);
                self.set_length(self.buf.len() - HEADER_LEN)
            });
        match res {
            Ok(()) => Ok(self),
            Err(e) => {
                // Leave the builder as it was before the failed attribute.
                self.buf.truncate(start);
                self.set_length(start - HEADER_LEN)?;
                Err(e)
            }
        }
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<&mut Self, EncodeError> {
        let start = self.buf.len();
        self.set_length(start + 24 - HEADER_LEN)?;
        let mac = integrity::hmac_sha1(key, &[&self.buf]);
        self.buf
            .extend_from_slice(&types::MESSAGE_INTEGRITY.to_be_bytes());
        self.buf.extend_from_slice(&20u16.to_be_bytes());
        self.buf.extend_from_slice(&mac);
        Ok(self)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32-byte HMAC-SHA256).
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<&mut Self, EncodeError> {
        let start = self.buf.len();
        self.set_length(start + 36 - HEADER_LEN)?;
        let mac = integrity::hmac_sha256(key, &[&self.buf]);
        self.buf
            .extend_from_slice(&types::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
        self.buf.extend_from_slice(&32u16.to_be_bytes());
        self.buf.extend_from_slice(&mac);
        Ok(self)
    }

    /// Appends FINGERPRINT; it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<&mut Self, EncodeError> {
        let start = self.buf.len();
        self.set_length(start + 8 - HEADER_LEN)?;
        let fp = integrity::fingerprint(&[&self.buf]);
        self.buf
            .extend_from_slice(&types::FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&fp.to_be_bytes());
        Ok(self)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}
