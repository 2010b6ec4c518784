//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/` for a while.
//!
//! The targets build on the machine's nightly toolchain (libFuzzer needs
//! `-Z sanitizer`); `cargo xtask test` runs each one briefly so a parser
//! that crashes on some input fails CI.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cmd::{output, run, workspace_root};

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only targets whose name contains this.
    pub filter: Option<String>,
}

/// cargo-fuzz needs nightly (`-Z sanitizer=address`); the rest of the
/// project stays on the pinned stable toolchain.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .current_dir(workspace_root().join("fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC");
    c
}

pub fn targets() -> anyhow::Result<Vec<String>> {
    if !workspace_root().join("fuzz/Cargo.toml").is_file() {
        return Ok(Vec::new());
    }
    let list = output(nightly_cargo().args(["fuzz", "list"]))
        .context("listing fuzz targets (is cargo-fuzz installed? `cargo xtask setup`)")?;
    Ok(list
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Runs each target for `per_target`; fails on the first crash.
pub fn run_all(per_target: Duration, filter: Option<&str>) -> anyhow::Result<()> {
    let targets = targets()?;
    if targets.is_empty() {
        bail!("no fuzz targets found in fuzz/");
    }
    for t in targets
        .iter()
        .filter(|t| filter.is_none_or(|f| t.contains(f)))
    {
        eprintln!("fuzz: {t} for {}s", per_target.as_secs());
        // corpus/<t> accumulates across runs; seeds/<t> holds the
        // committed starting inputs.
        let fuzz_dir = workspace_root().join("fuzz");
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let mut c = nightly_cargo();
        c.args(["fuzz", "run", t]).arg(&corpus);
        let seeds = fuzz_dir.join("seeds").join(t);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        run(c
            .arg("--")
            .arg(format!("-max_total_time={}", per_target.as_secs()))
            .arg("-print_final_stats=1"))?;
    }
    Ok(())
}

pub fn run_cmd(args: FuzzArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    run_all(Duration::from_secs(args.seconds), args.filter.as_deref())
}
