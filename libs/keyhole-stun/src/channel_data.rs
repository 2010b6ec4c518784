//! TURN ChannelData framing (RFC 8656 §12.4).

use crate::error::{DecodeError, EncodeError};

/// Channel numbers RFC 8656 allows clients to bind.
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;
/// Channel numbers RFC 5766 allowed; coturn's clients still pick from the
/// upper part, which RFC 7983 leaves unassigned (first byte 80–127), so
/// the framing accepts it and servers decide whether to bind such numbers.
pub const LEGACY_CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;
pub const CHANNEL_HEADER_LEN: usize = 4;

/// One ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message at the start of `buf`. Bytes after the
    /// payload (padding, over UDP possibly absent) are ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let head = buf
            .get(..CHANNEL_HEADER_LEN)
            .ok_or(DecodeError::Truncated {
                needed: CHANNEL_HEADER_LEN,
                have: buf.len(),
            })?;
        let channel = u16::from_be_bytes([head[0], head[1]]);
        if !LEGACY_CHANNEL_RANGE.contains(&channel) {
            return Err(DecodeError::BadChannelNumber(channel));
        }
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = buf
            .get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)
            .ok_or(DecodeError::Truncated {
                needed: CHANNEL_HEADER_LEN + len,
                have: buf.len(),
            })?;
        Ok(ChannelData { channel, data })
    }

    /// Encoded size; over TCP (`pad`) the frame is padded to a multiple of 4.
    pub fn encoded_len(data_len: usize, pad: bool) -> usize {
        let n = CHANNEL_HEADER_LEN + data_len;
        if pad { n.next_multiple_of(4) } else { n }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, pad: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !LEGACY_CHANNEL_RANGE.contains(&self.channel) {
            return Err(EncodeError::BadChannelNumber(self.channel));
        }
        let len = u16::try_from(self.data.len()).map_err(|_| EncodeError::MessageTooLong)?;
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.data);
        if pad {
            out.resize(out.len().next_multiple_of(4), 0);
        }
        Ok(())
    }

    pub fn encode(&self, pad: bool) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.data.len(), pad));
        self.encode_into(pad, &mut out)?;
        Ok(out)
    }
}
