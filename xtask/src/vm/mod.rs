//! `cargo xtask vm-test`: kernel WireGuard lives in a qemu VM, because the
//! build machines' kernel has no WireGuard module. KVM here cannot boot
//! stock kernels, so qemu uses TCG; booting the decompressed vmlinux through
//! its PVH entry keeps a run around ten seconds.
//!
//! Bench scenarios (`bench: true`) run only when named: they print
//! `KEYHOLE-BENCH` sample lines, which land in `KEYHOLE_BENCH_RESULTS`.

mod bench;
mod cpio;
mod initramfs;
mod kernel;
mod scenarios;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cmd::workspace_root;

#[derive(Debug, Args)]
pub struct VmArgs {
    /// Scenario to run (all but the benchmarks when omitted).
    pub scenario: Option<String>,
    /// Seconds before a run is declared hung (benchmarks get at least
    /// 1200).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// qemu's `-cpu` model. TCG's cost differs a lot between scalar and
    /// vector code, so benchmark ratios can be checked on another model
    /// (e.g. `max,avx2=off`).
    #[arg(long, default_value = "max")]
    pub qemu_cpu: String,
}

pub fn run_cmd(args: VmArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    run_on(
        args.scenario.as_deref(),
        Duration::from_secs(args.timeout),
        &args.qemu_cpu,
    )
}

pub fn run_scenarios(only: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    run_on(only, timeout, "max")
}

fn run_on(only: Option<&str>, timeout: Duration, cpu: &str) -> anyhow::Result<()> {
    let cache = keyhole_ebpf_build::tools_cache_dir()
        .context("no cache dir")?
        .join("vm");
    let kernel = kernel::fetch(&cache)?;
    let work = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("vm");
    std::fs::create_dir_all(&work)?;
    if let Some(o) = only
        && !scenarios::ALL.iter().any(|s| s.name == o)
    {
        let names: Vec<_> = scenarios::ALL.iter().map(|s| s.name).collect();
        bail!("no VM scenario {o:?}; there are {names:?}");
    }
    let results = std::env::var_os("KEYHOLE_BENCH_RESULTS").map(std::path::PathBuf::from);
    let mut failed = Vec::new();
    for s in scenarios::ALL
        .iter()
        .filter(|s| only.map_or(!s.bench, |o| o == s.name))
    {
        let extras = (s.extras)()?;
        let initrd = work.join(format!("{}.cpio", s.name));
        initramfs::build(&kernel, s.script, &extras, &initrd)?;
        let timeout = if s.bench {
            timeout.max(BENCH_TIMEOUT)
        } else {
            timeout
        };
        let start = Instant::now();
        let (ok, samples) = boot(&kernel.vmlinux, &initrd, timeout, cpu)?;
        let secs = start.elapsed().as_secs_f64();
        if let Some(path) = &results {
            bench::append(path, &samples)?;
        }
        bench::summarize(s.name, &samples);
        if ok {
            println!("vm-test {}: PASS ({secs:.1}s)", s.name);
        } else {
            println!("vm-test {}: FAIL ({secs:.1}s)", s.name);
            failed.push(s.name);
        }
    }
    if !failed.is_empty() {
        bail!("VM scenarios failed: {failed:?}");
    }
    Ok(())
}

/// Floor for a benchmark scenario's timeout: it runs for minutes under TCG.
const BENCH_TIMEOUT: Duration = Duration::from_secs(1200);

/// Boots the VM, echoes its console, and returns whether /init reported
/// PASS, with the benchmark samples it printed.
fn boot(
    vmlinux: &std::path::Path,
    initrd: &std::path::Path,
    timeout: Duration,
    cpu: &str,
) -> anyhow::Result<(bool, Vec<crate::bench::samples::Sample>)> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", cpu, "-m", "512", "-smp", "1"])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet reboot=t panic=-1 rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut verdict = None;
    let mut samples = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("  | {line}");
                if let Some(sample) = bench::parse_line(&line) {
                    samples.push(sample);
                }
                if let Some(rest) = line.split(initramfs::RESULT_TAG).nth(1) {
                    verdict = Some(rest.trim_start().starts_with("PASS"));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("vm: no result within {}s, killing qemu", timeout.as_secs());
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok((verdict.unwrap_or(false), samples))
}
