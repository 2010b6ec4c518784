//! [`Netns`]: a named network namespace that deletes itself on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};

use crate::command::{self, describe, os_args, run_host};
use crate::naming::netns_name;
use crate::proc::Proc;
use crate::root::require_root;
use crate::sweep::{NETNS_DIR, delete_namespace, sweep_once};

/// How long [`Netns::run`] waits before killing the command and failing.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A network namespace named `kh-<pid>-<n>-<tag>`, with `lo` up.
///
/// Dropping it (also while unwinding) SIGKILLs every process still in it
/// and deletes it. Sockets or TUN fds opened in it keep the kernel object
/// alive until they close, but the name is gone at once.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Held open for [`Netns::enter`].
    file: File,
}

impl Netns {
    /// Creates a fresh namespace. `tag` (e.g. "client") makes names readable;
    /// it need not be unique. Panics if not root.
    pub fn new(tag: &str) -> Result<Netns> {
        require_root();
        sweep_once();
        let name = netns_name(tag);
        run_host("ip", ["netns", "add", &name]).with_context(|| format!("create netns {name}"))?;
        let path = format!("{NETNS_DIR}/{name}");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = delete_namespace(&name);
                return Err(e).with_context(|| format!("open {path}"));
            }
        };
        // From here on Drop cleans up.
        let ns = Netns { name, file };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: for tools that take a namespace path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A [`Command`] running `program args` in this namespace
    /// (`ip netns exec`), for callers that need env vars or a working
    /// directory; start it with [`Netns::spawn_command`].
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .args(os_args(args));
        // Join the namespace before exec too: `spawn` returns only after the
        // exec, so the process is in the namespace (and seen by `ip netns
        // pids` when it drops) from then on, not only once `ip` got around to
        // it. `ip netns exec` still adds its /sys and /etc/netns mounts.
        match self.file.try_clone() {
            Ok(ns) => {
                let ns: OwnedFd = ns.into();
                // SAFETY: setns is a plain syscall, async-signal-safe; the fd is
                // owned by the closure and so open in the forked child.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            // Without the early join `ip netns exec` still does the job.
            Err(e) => eprintln!("keyhole-tests-netns: dup netns fd of {}: {e}", self.name),
        }
        cmd
    }

    /// Runs `program args` in this namespace to completion and returns its
    /// stdout. Fails, with exit status, stdout and stderr, if it exits non-zero
    /// or runs longer than [`DEFAULT_RUN_TIMEOUT`].
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_full(program, args, None, DEFAULT_RUN_TIMEOUT)
    }

    /// [`Netns::run`] with a custom timeout.
    pub fn run_timeout<I, S>(&self, program: &str, args: I, timeout: Duration) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_full(program, args, None, timeout)
    }

    /// [`Netns::run`] feeding `input` on stdin (e.g. `nft -f -`).
    pub fn run_with_stdin<I, S>(&self, program: &str, args: I, input: &[u8]) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_full(program, args, Some(input.to_vec()), DEFAULT_RUN_TIMEOUT)
    }

    fn run_full<I, S>(
        &self,
        program: &str,
        args: I,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = os_args(args);
        let label = self.label(program, &args);
        command::run(self.command(program, &args), label, stdin, timeout)
    }

    /// `ip <args>` for this namespace (runs `ip -n <name>`, which is cheaper
    /// than `ip netns exec`).
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = os_args(args);
        let label = self.label("ip", &args);
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(&args);
        command::run(cmd, label, None, DEFAULT_RUN_TIMEOUT)
    }

    /// Sets a sysctl in this namespace, e.g. `sysctl("net.ipv4.ip_forward", "1")`.
    /// Keys with a `/` are taken as paths under /proc/sys (for interface names
    /// containing dots).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let rel = if key.contains('/') {
            key.to_owned()
        } else {
            key.replace('.', "/")
        };
        let path = format!("/proc/sys/{rel}");
        // /proc/sys/net resolves against the calling thread's namespace.
        self.enter(|| std::fs::write(&path, value))
            .with_context(|| format!("sysctl {key}={value} (write {path}) in netns {}", self.name))
    }

    /// Reads a sysctl in this namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let rel = if key.contains('/') {
            key.to_owned()
        } else {
            key.replace('.', "/")
        };
        let path = format!("/proc/sys/{rel}");
        self.enter(|| std::fs::read_to_string(&path))
            .map(|s| s.trim_end().to_owned())
            .with_context(|| format!("read sysctl {key} in netns {}", self.name))
    }

    /// Starts `program args` in the background in this namespace, output
    /// captured. It is killed when the [`Proc`] or this `Netns` drops, or when
    /// the test process dies.
    pub fn spawn<I, S>(&self, program: &str, args: I) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = os_args(args);
        let label = self.label(program, &args);
        Proc::start(self.command(program, &args), label, None)
    }

    /// Starts a command built with [`Netns::command`] in the background.
    pub fn spawn_command(&self, cmd: Command) -> Result<Proc> {
        let label = format!("{cmd:?} (in netns {})", self.name);
        Proc::start(cmd, label, None)
    }

    /// Runs `f` on a fresh thread that has joined this namespace
    /// (`setns(CLONE_NEWNET)`), and returns its result; a panic in `f` is
    /// resumed on the caller. Sockets, TUN devices, netlink handles and eBPF
    /// attachments made in `f` belong to this namespace and keep working from
    /// any thread afterwards. Only the network namespace changes: `/sys` still
    /// shows the root namespace's devices; `/proc/sys/net` and
    /// `/proc/thread-self/net` show this one.
    pub fn enter<T, F>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let fd = self.file.as_fd();
        let name = &self.name;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("kh-enter-{name}"))
                .spawn_scoped(scope, move || {
                    if let Err(e) = setns(fd, CloneFlags::CLONE_NEWNET) {
                        panic!("setns into netns {name}: {e}");
                    }
                    f()
                })
                .expect("spawn a thread for Netns::enter");
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn label(&self, program: &str, args: &[std::ffi::OsString]) -> String {
        format!(
            "{} in netns {}",
            describe(program.as_ref(), args),
            self.name
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete_namespace(&self.name) {
            eprintln!("keyhole-tests-netns: deleting netns {}: {e:#}", self.name);
        }
    }
}
