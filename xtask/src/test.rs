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
        warn_if_disk_low();
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
        if !args.no_lint {
            // The client's platform code behind its trait must keep
            // compiling (and stay lint-clean) for the other platforms.
            phases.time("cross", || {
                for target in crate::setup::CROSS_TARGETS {
                    run(cargo().args([
                        "clippy",
                        "--locked",
                        "-p",
                        "keyhole-client",
                        "--target",
                        target,
                        "--",
                        "-D",
                        "warnings",
                    ]))?;
                }
                Ok(())
            })?;
        }
        phases.time("tests", || {
            run(cargo()
                .args(["test", "--workspace", "--locked"])
                // Interop tests must not skip when their peer is missing.
                .env("KEYHOLE_REQUIRE_COTURN", "1")
                // The debug binaries just built, never an older release
                // build that `cargo xtask bench` may have left.
                .envs(crate::binaries::env_for("debug"))
                .env(
                    "KEYHOLE_OIDC_PROVIDER_DIR",
                    crate::setup::oidc_provider_dir()?,
                )
                .arg("--")
                .args(&args.test_args))
        })?;
        // The whole system once, as a newcomer's `cargo xtask demo` runs it.
        phases.time("demo", || {
            crate::demo::run_cmd(crate::demo::DemoArgs {
                once: true,
                listen: "127.0.0.1:0".parse()?,
            })
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

/// A clean build with tests, release examples, clippy and fuzzing needs
/// about 20 GiB; running out mid-link shows up as a linker crash, so say it
/// plainly up front.
fn warn_if_disk_low() {
    const NEEDED_GIB: u64 = 20;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    if unsafe { libc::statvfs(c".".as_ptr(), &mut st) } != 0 {
        return;
    }
    let free_gib = (st.f_bavail as u64 * st.f_frsize as u64) >> 30;
    if free_gib < NEEDED_GIB {
        eprintln!(
            "warning: {free_gib} GiB free on this file system; a clean `cargo xtask test` needs about {NEEDED_GIB} GiB"
        );
    }
}
