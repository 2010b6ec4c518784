//! Background processes with continuously captured output.

use std::io::{Read, Write};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::spawner;

/// How long to wait for the output pipes to close after the process exited.
/// A grandchild that inherited them can keep them open forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A process running in the background (usually inside a [`crate::Netns`]).
///
/// Its stdout and stderr are read continuously by two threads into buffers,
/// so it never blocks on a full pipe. Dropping it kills (SIGKILL) and reaps it.
pub struct Proc {
    child: Child,
    label: String,
    status: Option<ExitStatus>,
    capture: Arc<Capture>,
}

#[derive(Default)]
struct Buffers {
    /// stdout and stderr interleaved in arrival order, as a terminal shows them.
    all: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    open_streams: usize,
}

#[derive(Default)]
struct Capture {
    buffers: Mutex<Buffers>,
    changed: Condvar,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Buffers> {
        // A reader thread cannot panic while holding the lock; recover anyway.
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Proc {
    /// Spawns `cmd` with captured stdout/stderr and `stdin` (or /dev/null).
    /// `label` names the command and namespace in every error.
    pub(crate) fn start(mut cmd: Command, label: String, stdin: Option<Vec<u8>>) -> Result<Proc> {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = spawner::spawn(cmd).with_context(|| format!("failed to start {label}"))?;
        let capture = Arc::new(Capture::default());
        capture.lock().open_streams = 2;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_reader(&label, Stream::Out(stdout), capture.clone())?;
        spawn_reader(&label, Stream::Err(stderr), capture.clone())?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A thread, so a child that does not read its input cannot block us.
            std::thread::Builder::new()
                .name("kh-proc-stdin".into())
                .spawn(move || {
                    let _ = pipe.write_all(&input);
                })
                .context("start stdin writer thread")?;
        }
        Ok(Proc {
            child,
            label,
            status: None,
            capture,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this process is, e.g. "`iperf3 -s` in netns kh-1-2-server".
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything printed so far, stdout and stderr interleaved in arrival order.
    pub fn output_so_far(&self) -> String {
        String::from_utf8_lossy(&self.capture.lock().all).into_owned()
    }

    /// Stdout printed so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.capture.lock().stdout).into_owned()
    }

    /// Stderr printed so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.capture.lock().stderr).into_owned()
    }

    /// Waits until `needle` appears in the output (stdout or stderr).
    /// Fails early, with the output, if the process ends without printing it.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buffers = self.capture.lock();
        loop {
            if contains(&buffers.all, needle.as_bytes()) {
                return Ok(());
            }
            if buffers.open_streams == 0 {
                bail!(
                    "{} closed its output without printing {needle:?}; output:\n{}",
                    self.label,
                    String::from_utf8_lossy(&buffers.all)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; output so far:\n{}",
                    self.label,
                    String::from_utf8_lossy(&buffers.all)
                );
            }
            buffers = self
                .capture
                .changed
                .wait_timeout(buffers, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for the process to exit. `Ok(None)`: still running.
    /// Once it has exited, the captured output is complete (unless a
    /// grandchild keeps the pipes open for longer than a second).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let polled = self
                .child
                .try_wait()
                .with_context(|| format!("wait for {}", self.label))?;
            if let Some(status) = polled {
                self.status = Some(status);
                self.drain();
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_timeout(Duration::ZERO)
    }

    /// Sends `signal` (e.g. [`Signal::SIGTERM`] to test a graceful shutdown).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            bail!("{} already exited; not sending {signal}", self.label);
        }
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .with_context(|| format!("send {signal} to {}", self.label))
    }

    /// SIGKILLs the process (if still running) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if self.status.is_none() {
            // Fails only if it already exited and was reaped, which wait covers.
            let _ = self.child.kill();
            let status = self
                .child
                .wait()
                .with_context(|| format!("reap {}", self.label))?;
            self.status = Some(status);
            self.drain();
        }
        Ok(())
    }

    /// Waits (bounded) for the reader threads to hit end of file.
    fn drain(&self) {
        let buffers = self.capture.lock();
        let _ = self
            .capture
            .changed
            .wait_timeout_while(buffers, DRAIN_TIMEOUT, |b| b.open_streams > 0);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("keyhole-tests-netns: {e:#}");
        }
    }
}

enum Stream {
    Out(ChildStdout),
    Err(ChildStderr),
}

fn spawn_reader(label: &str, stream: Stream, capture: Arc<Capture>) -> Result<()> {
    // Set KH_NETNS_ECHO=1 to watch children's output live while debugging.
    let echo = std::env::var_os("KH_NETNS_ECHO").is_some_and(|v| v != "0");
    let prefix = format!("[{label}] ");
    std::thread::Builder::new()
        .name("kh-proc-reader".into())
        .spawn(move || {
            let (mut reader, is_err): (Box<dyn Read>, bool) = match stream {
                Stream::Out(s) => (Box::new(s), false),
                Stream::Err(s) => (Box::new(s), true),
            };
            let mut chunk = [0u8; 8192];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let data = &chunk[..n];
                if echo {
                    eprint!("{prefix}{}", String::from_utf8_lossy(data));
                }
                let mut buffers = capture.lock();
                buffers.all.extend_from_slice(data);
                if is_err {
                    buffers.stderr.extend_from_slice(data);
                } else {
                    buffers.stdout.extend_from_slice(data);
                }
                drop(buffers);
                capture.changed.notify_all();
            }
            capture.lock().open_streams -= 1;
            capture.changed.notify_all();
        })
        .context("start output reader thread")?;
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
