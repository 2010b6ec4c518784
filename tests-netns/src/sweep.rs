//! Deleting namespaces, and sweeping those left behind by killed runs.

use std::sync::Once;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::command::run_host;
use crate::naming::{NS_PREFIX, owner_pid};

/// Where `ip netns` keeps its named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

static FIRST_USE: Once = Once::new();

/// Bound on kill-and-look-again rounds when emptying a namespace.
const KILL_ROUNDS: usize = 100;

/// Called before this process creates its first namespace.
pub(crate) fn sweep_once() {
    // Our own pid's names can only be leftovers of an earlier process that
    // had the same pid, since we have not created any yet.
    FIRST_USE.call_once(|| {
        sweep(true);
    });
}

/// Deletes `kh-<pid>-*` namespaces whose creating process no longer exists
/// (leftovers of a SIGKILLed or crashed run), killing what still runs in
/// them. Best effort: errors are ignored, and a leftover whose pid was reused
/// by a live process stays until that process is gone. Returns the names
/// deleted. Runs automatically at the first [`crate::Netns::new`].
pub fn sweep_stale_namespaces() -> Vec<String> {
    sweep(false)
}

fn sweep(include_own_pid: bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(NS_PREFIX) {
            continue;
        }
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        let stale = if pid == me {
            include_own_pid
        } else {
            !process_alive(pid)
        };
        if stale && delete_namespace(&name).is_ok() {
            deleted.push(name);
        }
    }
    deleted
}

/// A zombie counts as dead: it will never clean up after itself.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// SIGKILLs every process in the namespace (never this one), then deletes it.
pub(crate) fn delete_namespace(name: &str) -> anyhow::Result<()> {
    kill_all_in(name);
    run_host("ip", ["netns", "del", name])?;
    Ok(())
}

/// Repeats until the namespace is empty: a process may fork while we kill.
/// Killed processes drop out of `ip netns pids` as soon as they are zombies.
fn kill_all_in(name: &str) {
    let me = std::process::id();
    for _ in 0..KILL_ROUNDS {
        let Ok(pids) = run_host("ip", ["netns", "pids", name]) else {
            return;
        };
        let pids: Vec<u32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != me)
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("keyhole-tests-netns: processes keep appearing in netns {name}; deleting it anyway");
}
