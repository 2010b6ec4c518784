//! Demultiplexing of datagrams and stream frames (RFC 7983 first-byte
//! ranges, then the STUN cookie and length checks). ChannelData takes
//! first bytes 64–127: RFC 7983's 64–79 plus RFC 5766's legacy channels.

use crate::channel_data::CHANNEL_HEADER_LEN;
use crate::error::DecodeError;
use crate::header::{HEADER_LEN, MAGIC_COOKIE};

/// What a datagram received on a TURN listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    ChannelData,
    Other,
}

/// Classifies a UDP datagram without parsing attributes.
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(0..=3) if buf.len() >= HEADER_LEN => {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            if cookie == MAGIC_COOKIE && len % 4 == 0 && HEADER_LEN + len == buf.len() {
                PacketKind::Stun
            } else {
                PacketKind::Other
            }
        }
        Some(0x40..=0x7F) if buf.len() >= CHANNEL_HEADER_LEN => {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            // Over UDP the sender may or may not have padded.
            let min = CHANNEL_HEADER_LEN + len;
            if buf.len() >= min && buf.len() <= min.next_multiple_of(4) {
                PacketKind::ChannelData
            } else {
                PacketKind::Other
            }
        }
        _ => PacketKind::Other,
    }
}

/// Length of the frame at the start of a TCP stream buffer: `Ok(None)` when
/// more bytes are needed to tell, an error when the stream is not STUN or
/// ChannelData (the connection should then be closed).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        0..=3 => {
            if buf.len() < 8 {
                return Ok(None);
            }
            let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            if cookie != MAGIC_COOKIE {
                return Err(DecodeError::BadMagicCookie(cookie));
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len % 4 != 0 {
                return Err(DecodeError::UnalignedLength(len));
            }
            Ok(Some(HEADER_LEN + len))
        }
        0x40..=0x7F => {
            if buf.len() < CHANNEL_HEADER_LEN {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            // Over TCP ChannelData is always padded to 4 (RFC 8656 §12.5).
            Ok(Some((CHANNEL_HEADER_LEN + len).next_multiple_of(4)))
        }
        _ => Err(DecodeError::NotStun),
    }
}
