//! TURN over TCP (RFC 8656 §6.2): STUN messages and ChannelData frames
//! back to back on one byte stream. The IO shell feeds what it read; whole
//! frames come out one at a time, ready for [`Client::handle_input`].
//!
//! [`Client::handle_input`]: super::Client::handle_input

use keyhole_stun::{DecodeError, frame_len};

/// Upper bound of bytes held while waiting for the rest of a frame: the
/// largest STUN message (20 + 65535) plus one more read.
const MAX_BUFFERED: usize = 2 * 65_556;

/// Splits a TURN TCP byte stream into frames.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
}

/// Why a stream cannot be framed; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("stream is not STUN/ChannelData: {0}")]
    Decode(#[from] DecodeError),
    #[error("more than {MAX_BUFFERED} bytes buffered without a whole frame")]
    Overflow,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        if self.start > 0 && (self.start >= self.buf.len() / 2 || bytes.len() > 4096) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.len() - self.start + bytes.len() > MAX_BUFFERED {
            return Err(FramingError::Overflow);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let rest = &self.buf[self.start..];
        match frame_len(rest)? {
            Some(n) if rest.len() >= n => {
                let s = self.start;
                self.start += n;
                Ok(Some(&self.buf[s..s + n]))
            }
            _ => Ok(None),
        }
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhole_stun::ChannelData;

    #[test]
    fn splits_frames_across_arbitrary_reads() {
        let a = ChannelData {
            channel: 0x4001,
            data: b"hello",
        }
        .encode(true)
        .unwrap();
        let b = ChannelData {
            channel: 0x4002,
            data: b"worlds!!",
        }
        .encode(true)
        .unwrap();
        assert_eq!(a.len(), 12, "padded to 4");
        let stream: Vec<u8> = [a.clone(), b.clone()].concat();
        for cut in 0..stream.len() {
            let mut f = StreamFramer::new();
            let mut frames = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                f.push(part).unwrap();
                while let Some(fr) = f.next_frame().unwrap() {
                    frames.push(fr.to_vec());
                }
            }
            assert_eq!(frames, vec![a.clone(), b.clone()], "cut at {cut}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        let mut f = StreamFramer::new();
        // A TLS ClientHello (0x16) is neither STUN nor ChannelData.
        f.push(&[0x16, 3, 1, 0, 0xF4, 1]).unwrap();
        assert!(f.next_frame().is_err());
        let mut f = StreamFramer::new();
        // A STUN header announcing 65532 bytes, then far too much filler
        // without ever completing: bounded.
        let mut head = vec![0, 1, 0xFF, 0xFC, 0x21, 0x12, 0xA4, 0x42];
        head.extend_from_slice(&[0; 12]);
        f.push(&head).unwrap();
        assert_eq!(f.next_frame().unwrap(), None);
        assert_eq!(f.push(&vec![0; MAX_BUFFERED]), Err(FramingError::Overflow));
    }
}
