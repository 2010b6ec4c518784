//! The filter's lease: a deadline in the program's `POLICY_LEASE` map that
//! a thread of this process keeps pushing forward. Once the process is
//! gone (SIGKILL, crash), the deadline passes and the pinned program drops
//! every packet: fail closed within [`LEASE`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{Array, MapData, MapError};
use keyhole_ebpf_common::policy::LEASE_MAP;

use super::PolicyError;

/// How long the filter keeps deciding without a renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the lease is renewed: several renewals may be missed (a
/// loaded host, a stalled thread) before traffic stops.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Renews the lease until dropped.
pub(super) struct Lease {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

/// `CLOCK_MONOTONIC` in ns, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> Result<u64, PolicyError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(PolicyError::Map {
            name: LEASE_MAP,
            source: MapError::IoError(std::io::Error::last_os_error()),
        });
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn renew(map: &Mutex<Array<MapData, u64>>) -> Result<(), PolicyError> {
    let deadline = monotonic_ns()? + LEASE.as_nanos() as u64;
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.set(0, deadline, 0).map_err(|source| PolicyError::Map {
        name: LEASE_MAP,
        source,
    })
}

impl Lease {
    /// Sets the lease now (an error here fails the attach) and starts the
    /// renewing thread.
    pub(super) fn start(map: Array<MapData, u64>) -> Result<Self, PolicyError> {
        let map = Arc::new(Mutex::new(map));
        renew(&map)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("keyhole-lease".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(RENEW_EVERY);
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        if let Err(e) = renew(&map) {
                            tracing::error!(error = %e, "renewing the policy filter lease");
                        }
                    }
                }
            })
            .map_err(|e| PolicyError::Map {
                name: LEASE_MAP,
                source: MapError::IoError(e),
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
