//! Joining two TUN devices with a pair of copy threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tun::Tun;

/// How often the copy threads look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Packets and bytes copied in each direction so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeStats {
    pub a_to_b_packets: u64,
    pub a_to_b_bytes: u64,
    pub b_to_a_packets: u64,
    pub b_to_a_bytes: u64,
}

#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// Keeps a [`tun_pipe`] running; dropping it stops and joins the threads
/// and closes both TUNs (removing the devices).
pub struct PipeHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// `Some` until [`PipeHandle::stop`] takes them back.
    tuns: Option<(Arc<Tun>, Arc<Tun>)>,
    a_to_b: Arc<Counters>,
    b_to_a: Arc<Counters>,
}

/// Copies every packet read from `a` into `b` and vice versa, so packets
/// one namespace's kernel sends into its TUN arrive on the other TUN as
/// ingress: the shape of decrypted tunnel traffic, without the tunnel.
pub fn tun_pipe(a: Tun, b: Tun) -> PipeHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (a_to_b, b_to_a) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
    let threads = vec![
        copy_thread(a.clone(), b.clone(), a_to_b.clone(), stop.clone()),
        copy_thread(b.clone(), a.clone(), b_to_a.clone(), stop.clone()),
    ];
    PipeHandle {
        stop,
        threads,
        tuns: Some((a, b)),
        a_to_b,
        b_to_a,
    }
}

fn copy_thread(
    from: Arc<Tun>,
    to: Arc<Tun>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("kh-pipe-{}", from.name()))
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match from.read_packet(&mut buf, POLL_INTERVAL) {
                    Ok(Some(n)) => {
                        // A write fails when the other side is down: the
                        // packet is dropped, as a real link would.
                        if to.write_packet(&buf[..n]).is_ok() {
                            counters.packets.fetch_add(1, Ordering::Relaxed);
                            counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Ok(None) => {}
                    // E.g. the device went down; don't spin.
                    Err(_) => std::thread::sleep(POLL_INTERVAL),
                }
            }
        })
        .expect("spawn a tun_pipe thread")
}

impl PipeHandle {
    /// Packets and bytes copied so far (only successful writes count).
    pub fn stats(&self) -> PipeStats {
        PipeStats {
            a_to_b_packets: self.a_to_b.packets.load(Ordering::Relaxed),
            a_to_b_bytes: self.a_to_b.bytes.load(Ordering::Relaxed),
            b_to_a_packets: self.b_to_a.packets.load(Ordering::Relaxed),
            b_to_a_bytes: self.b_to_a.bytes.load(Ordering::Relaxed),
        }
    }

    /// The TUN given as `a`.
    pub fn a(&self) -> &Tun {
        &self.tuns.as_ref().expect("TUNs are present until stop").0
    }

    /// The TUN given as `b`.
    pub fn b(&self) -> &Tun {
        &self.tuns.as_ref().expect("TUNs are present until stop").1
    }

    /// Stops copying and hands the two TUNs back, still open.
    pub fn stop(mut self) -> (Tun, Tun) {
        self.join();
        let (a, b) = self.tuns.take().expect("TUNs are present until stop");
        // The joined threads dropped their clones: these are the last ones.
        match (Arc::try_unwrap(a), Arc::try_unwrap(b)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => unreachable!("copy threads are joined and hold no TUN"),
        }
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PipeHandle {
    fn drop(&mut self) {
        self.join();
    }
}
