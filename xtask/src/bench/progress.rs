//! Runs a benchmark command with its output in a log file and one progress
//! line on the terminal: which benchmark, how long so far, and the last
//! line it printed. Without a terminal, the line is printed when it
//! changes, at most every 15 s.

use std::fs::File;
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The last non-empty line of a file (reads only its tail).
fn last_line(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split(['\n', '\r'])
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_owned()
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(max.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// Runs `cmd` to completion with stdout and stderr appended to `log`,
/// showing progress as `label`. Fails when the command fails, with the
/// log's last line.
pub fn run_logged(label: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Duration> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let _ = writeln!(&file, "$ {cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("{label}: starting {:?}", cmd.get_program()))?;
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut shown = String::new();
    let mut shown_at = Instant::now() - Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let last = last_line(log);
        let line = format!("{label}  {}  {}", elapsed(start.elapsed()), clip(&last, 90));
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if last != shown && shown_at.elapsed() >= Duration::from_secs(15) {
            eprintln!("{line}");
            shown = last;
            shown_at = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = start.elapsed();
    if tty {
        eprint!("\r\x1b[2K");
    }
    if !status.success() {
        bail!(
            "{label} failed ({status}) after {}: {} (log: {})",
            elapsed(took),
            last_line(log),
            log.display()
        );
    }
    eprintln!("{label}  done in {}", elapsed(took));
    Ok(took)
}
