//! `cargo xtask`: Keyhole's project commands. Every command except `setup`
//! runs the set-up first, so a fresh machine needs nothing else.

mod bench;
mod binaries;
mod cmd;
mod demo;
mod fuzz;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the project needs (Debian packages, toolchain
    /// components, bpf-linker); idempotent and quiet when all is there.
    Setup,
    /// Run every check and test: fmt, clippy, unit and netns tests.
    Test(test::TestArgs),
    /// Start the system on this machine and show it working.
    Demo(demo::DemoArgs),
    /// Run the cargo-fuzz targets in fuzz/.
    Fuzz(fuzz::FuzzArgs),
    /// Boot a qemu VM with kernel WireGuard and run scenarios in it.
    VmTest(vm::VmArgs),
    /// Run every benchmark beside its anchor, repeated, and write the
    /// report (BENCHMARKS.md, benchmarks/report.json, PNG charts).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Setup => setup::run(),
        Command::Test(a) => test::run_cmd(a),
        Command::Demo(a) => demo::run_cmd(a),
        Command::Fuzz(a) => fuzz::run_cmd(a),
        Command::VmTest(a) => vm::run_cmd(a),
        Command::Bench(a) => bench::run_cmd(a),
    }
}
