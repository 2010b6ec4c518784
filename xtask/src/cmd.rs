//! Running external commands with clear errors.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn run(c: &mut Command) -> anyhow::Result<()> {
    let what = describe(c);
    let status = c
        .status()
        .with_context(|| format!("failed to start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn output(c: &mut Command) -> anyhow::Result<String> {
    let what = describe(c);
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{what}`"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wall-clock phases of a run, printed as a summary at the end.
#[derive(Default)]
pub struct Phases {
    phases: Vec<(String, Duration)>,
}

impl Phases {
    pub fn time<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        eprintln!("==> {name}");
        let start = Instant::now();
        let r = f();
        let took = start.elapsed();
        eprintln!(
            "==> {name}: {} in {:.1}s",
            if r.is_ok() { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
        self.phases.push((name.to_string(), took));
        r
    }

    pub fn summary(&self) -> String {
        let total: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        let mut s = String::from("phase timings:\n");
        for (name, d) in &self.phases {
            let share = if total.is_zero() {
                0.0
            } else {
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            };
            s.push_str(&format!(
                "  {name:<12} {:>8.1}s  {share:>5.1}%\n",
                d.as_secs_f64()
            ));
        }
        s.push_str(&format!(
            "  {:<12} {:>8.1}s\n",
            "total",
            total.as_secs_f64()
        ));
        s
    }
}
