//! Starts child processes from one long-lived thread.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. Test threads come and go (cargo runs each test on its
//! own thread, `Netns::enter` uses short-lived threads), so forking from them
//! would kill children that a longer-lived fixture still owns. Forking from a
//! thread that lives as long as the process ties the children to the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender, SyncSender};

type Job = (Command, SyncSender<io::Result<Child>>);

static SPAWNER: OnceLock<Sender<Job>> = OnceLock::new();

fn spawner() -> &'static Sender<Job> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kh-netns-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the netns spawner thread");
        tx
    })
}

/// Spawns `cmd` so that it is SIGKILLed when this process dies.
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl, getppid)
    // and builds an io::Error from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    spawner()
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("netns spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("netns spawner thread dropped the request"))?
}
