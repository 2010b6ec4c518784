//! `cargo xtask test`: everything CI checks, in one command.

use std::time::Duration;

use clap::Args;

use crate::cmd::{Phases, cargo, run};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (a quicker local loop).
    #[arg(long)]
    pub no_lint: bool,
    /// Seconds each fuzz target runs (0 skips fuzzing).
    #[arg(long, default_value_t = 20)]
    pub fuzz_seconds: u64,
    /// Extra arguments passed to `cargo test` after `--` (e.g. a name filter).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

pub fn run_cmd(args: TestArgs) -> anyhow::Result<()> {
    let mut phases = Phases::default();
    let result = (|| {
        phases.time("setup", crate::setup::run)?;
        if !args.no_lint {
            phases.time("fmt", || run(cargo().args(["fmt", "--all", "--check"])))?;
        }
        phases.time("build", || {
            run(cargo().args(["build", "--workspace", "--all-targets", "--locked"]))?;
            run(cargo().args(["test", "--workspace", "--no-run", "--locked"]))?;
            // The tunnel netns tests run this peer as a real process.
            run(cargo().args([
                "build",
                "--release",
                "--locked",
                "-p",
                "keyhole-tunnel",
                "--features",
                "io",
                "--example",
                "keyhole-tunnel-peer",
            ]))
        })?;
        if !args.no_lint {
            phases.time("clippy", || {
                run(cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ]))
            })?;
        }
        phases.time("tests", || {
            run(cargo()
                .args(["test", "--workspace", "--locked"])
                // Interop tests must not skip when their peer is missing.
                .env("KEYHOLE_REQUIRE_COTURN", "1")
                .arg("--")
                .args(&args.test_args))
        })?;
        phases.time("vm", || {
            crate::vm::run_scenarios(None, Duration::from_secs(300))
        })?;
        if args.fuzz_seconds > 0 {
            phases.time("fuzz", || {
                crate::fuzz::run_all(Duration::from_secs(args.fuzz_seconds), None)
            })?;
        }
        Ok(())
    })();
    eprint!("{}", phases.summary());
    result
}
