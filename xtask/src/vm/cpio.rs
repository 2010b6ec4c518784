//! A minimal writer for the `newc` cpio format the kernel unpacks as an
//! initramfs (uncompressed: the kernel takes it as is, and it saves a
//! compressor dependency).

use std::io::{self, Write};

pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self { out, ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.ino += 1;
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + namesize)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, &[])
    }

    pub fn file(&mut self, name: &str, data: &[u8], executable: bool) -> io::Result<()> {
        let perm = if executable { 0o755 } else { 0o644 };
        self.entry(name, S_IFREG | perm, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, target.as_bytes())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_four_byte_aligned_and_end_with_trailer() {
        let mut c = Cpio::new(Vec::new());
        c.dir("bin").unwrap();
        c.file("/bin/x", b"hello", true).unwrap();
        c.symlink("sh", "busybox").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let s = String::from_utf8_lossy(&out);
        assert!(s.starts_with("070701"));
        assert!(s.contains("bin/x\0"));
        assert!(s.contains("hello"));
        assert!(s.contains("TRAILER!!!\0"));
        // The file's size field (7th) is 5.
        let second = s.match_indices("070701").nth(1).unwrap().0;
        assert_eq!(&s[second + 6 + 6 * 8..second + 6 + 7 * 8], "00000005");
    }
}
