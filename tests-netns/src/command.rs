//! Running commands to completion, with errors that say what failed where.

use std::ffi::{OsStr, OsString};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::proc::Proc;

/// Collects command arguments from anything string-like.
pub(crate) fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

/// "`program arg1 arg2`" for messages.
pub(crate) fn describe(program: &OsStr, args: &[OsString]) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    format!("`{s}`")
}

/// Runs `cmd` to completion; returns its stdout. On failure or timeout the
/// error names `label` and carries the exit status, stdout and stderr.
pub(crate) fn run(
    cmd: Command,
    label: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<String> {
    let mut proc = Proc::start(cmd, label, stdin)?;
    match proc.wait_timeout(timeout)? {
        Some(status) if status.success() => Ok(proc.stdout_so_far()),
        Some(status) => bail!(
            "{} failed ({status})\nstdout: {}\nstderr: {}",
            proc.label(),
            proc.stdout_so_far().trim_end(),
            proc.stderr_so_far().trim_end()
        ),
        None => {
            proc.kill()?;
            bail!(
                "{} timed out after {timeout:?} and was killed\nstdout: {}\nstderr: {}",
                proc.label(),
                proc.stdout_so_far().trim_end(),
                proc.stderr_so_far().trim_end()
            )
        }
    }
}

/// Runs a command in the root namespace (only `ip` itself: `ip -n`,
/// `ip netns add/del`, and veth creation straight into namespaces).
pub(crate) fn run_host<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args = os_args(args);
    let label = format!("{} (host)", describe(program.as_ref(), &args));
    let mut cmd = Command::new(program);
    cmd.args(&args);
    run(cmd, label, None, crate::DEFAULT_RUN_TIMEOUT)
}
