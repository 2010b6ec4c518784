//! The benchmarks `cargo xtask bench` runs: how each is built and run, and
//! which report sections (bench ids of its samples) it fills.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use super::progress::run_logged;
use super::results_env;
use super::samples::{self, Sample};
use crate::binaries::{env_for, target_dir};
use crate::cmd::{cargo, run, workspace_root};

pub struct Ctx {
    pub repeats: u32,
    pub quick: bool,
    /// The samples file this run's benchmark appends to.
    pub results: PathBuf,
    pub log: PathBuf,
    /// Progress label, e.g. "[2/6] relay".
    pub label: String,
}

pub struct Suite {
    pub id: &'static str,
    pub title: &'static str,
    /// The report sections its samples belong to.
    pub benches: &'static [&'static str],
    pub command: fn(&Ctx) -> String,
    pub run: fn(&Ctx) -> anyhow::Result<()>,
    /// Cargo commands that build what it runs (each a full argument list).
    pub build: &'static [&'static [&'static str]],
}

pub const SUITES: &[Suite] = &[
    Suite {
        id: "tunnel",
        title: "tunnel throughput",
        benches: &["tunnel"],
        command: |c| format!("{TUNNEL_SCRIPT} {} {}", tunnel_secs(c), c.repeats),
        run: run_tunnel,
        build: &[&[
            "build",
            "--release",
            "-p",
            "keyhole-tunnel",
            "--features",
            "io",
            "--example",
            "keyhole-tunnel-peer",
        ]],
    },
    Suite {
        id: "relay",
        title: "relay packets/s",
        benches: &["relay"],
        command: |c| {
            format!(
                "KEYHOLE_BENCH_ROUNDS={} KEYHOLE_BENCH_SECS={} cargo bench -p keyhole-relay --bench relay_throughput",
                c.repeats,
                relay_secs(c)
            )
        },
        run: |c| {
            let mut cmd = cargo();
            cmd.args([
                "bench",
                "--locked",
                "-p",
                "keyhole-relay",
                "--bench",
                "relay_throughput",
            ])
            .env("KEYHOLE_BENCH_ROUNDS", c.repeats.to_string())
            .env("KEYHOLE_BENCH_SECS", relay_secs(c).to_string())
            .envs([results_env(&c.results)]);
            run_logged(&c.label, &mut cmd, &c.log).map(drop)
        },
        build: &[&[
            "bench",
            "--no-run",
            "-p",
            "keyhole-relay",
            "--bench",
            "relay_throughput",
        ]],
    },
    Suite {
        id: "filter",
        title: "eBPF filter cost",
        benches: &["filter"],
        command: |c| format!("filter_cost {} {} 100000", c.repeats, filter_secs(c)),
        run: |c| {
            let mut cmd = Command::new(example("filter_cost"));
            cmd.args([
                c.repeats.to_string(),
                filter_secs(c).to_string(),
                "100000".into(),
            ])
            .envs([results_env(&c.results)]);
            run_logged(&c.label, &mut cmd, &c.log).map(drop)
        },
        build: &[&[
            "build",
            "--release",
            "-p",
            "keyhole-tests-netns",
            "--example",
            "filter_cost",
        ]],
    },
    Suite {
        id: "portal",
        title: "portal authorisations",
        benches: &["portal"],
        command: |c| {
            format!(
                "authz_bench {}  (× {} repeats)",
                portal_args(c).join(" "),
                c.repeats
            )
        },
        run: |c| {
            for round in 1..=c.repeats {
                let mut cmd = Command::new(example("authz_bench"));
                cmd.args(portal_args(c))
                    .env("KEYHOLE_BENCH_ROUND", round.to_string())
                    .envs([results_env(&c.results)]);
                let label = format!("{} (repeat {round}/{})", c.label, c.repeats);
                run_logged(&label, &mut cmd, &c.log)?;
            }
            Ok(())
        },
        build: &[&[
            "build",
            "--release",
            "-p",
            "keyhole-portal",
            "--example",
            "authz_bench",
        ]],
    },
    Suite {
        id: "flow",
        title: "first packet and failover",
        benches: &["flow_setup", "failover"],
        command: |c| format!("flow_bench {}", c.repeats),
        run: |c| {
            let mut cmd = Command::new(example("flow_bench"));
            cmd.arg(c.repeats.to_string())
                .envs(env_for("release"))
                .envs([results_env(&c.results)]);
            run_logged(&c.label, &mut cmd, &c.log).map(drop)
        },
        build: &[
            &[
                "build",
                "--release",
                "-p",
                "keyhole-tests-netns",
                "--example",
                "flow_bench",
            ],
            &[
                "build",
                "--release",
                "--bins",
                "-p",
                "keyhole-portal",
                "-p",
                "keyhole-relay",
                "-p",
                "keyhole-gateway",
                "-p",
                "keyhole-client",
            ],
        ],
    },
    Suite {
        id: "vm",
        title: "kernel vs userspace backend (VM)",
        benches: &["vm_backend"],
        command: |_| "cargo xtask vm-test backend-throughput".into(),
        run: |c| {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["vm-test", "backend-throughput"])
                .envs([results_env(&c.results)]);
            run_logged(&c.label, &mut cmd, &c.log).map(drop)
        },
        build: &[],
    },
];

const TUNNEL_SCRIPT: &str = "libs/keyhole-tunnel/bench/netns-iperf.sh";

fn tunnel_secs(c: &Ctx) -> u32 {
    if c.quick { 2 } else { 5 }
}

fn relay_secs(c: &Ctx) -> u32 {
    if c.quick { 1 } else { 3 }
}

fn filter_secs(c: &Ctx) -> u32 {
    if c.quick { 2 } else { 5 }
}

fn portal_args(c: &Ctx) -> Vec<String> {
    let (secs, idle) = if c.quick {
        ("2", "1000")
    } else {
        ("8", "10000")
    };
    [
        "--seconds",
        secs,
        "--warmup",
        "2",
        "--rate",
        "20000",
        "--idle",
        idle,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn example(name: &str) -> PathBuf {
    target_dir().join("release").join("examples").join(name)
}

/// Builds, once, what the chosen suites run.
pub fn build(chosen: &[&Suite]) -> anyhow::Result<()> {
    for s in chosen {
        for args in s.build {
            eprintln!("building for {}: cargo {}", s.id, args.join(" "));
            run(cargo().args(*args).args(["--locked", "--quiet"]))?;
        }
    }
    Ok(())
}

/// The tunnel script writes a TSV (variant, streams, repeat, gbps,
/// cpu_s_per_gb); its rows become samples.
fn run_tunnel(c: &Ctx) -> anyhow::Result<()> {
    let tsv = c.results.with_extension("tsv");
    let mut cmd = Command::new("bash");
    cmd.current_dir(workspace_root())
        .arg(TUNNEL_SCRIPT)
        .args([tunnel_secs(c).to_string(), c.repeats.to_string()])
        .env("OUT", &tsv)
        .env(
            "PEER",
            target_dir().join("release/examples/keyhole-tunnel-peer"),
        );
    run_logged(&c.label, &mut cmd, &c.log)?;
    let text = std::fs::read_to_string(&tsv).with_context(|| format!("{}", tsv.display()))?;
    let samples = tunnel_samples(&text)?;
    let mut all = samples::read(&c.results)?;
    all.extend(samples);
    samples::write(&c.results, &all)
}

pub fn tunnel_samples(tsv: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (i, line) in tsv.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let [variant, streams, repeat, gbps, cpu] = f[..] else {
            anyhow::bail!("tunnel TSV line {}: {line:?}", i + 1);
        };
        let round: u32 = repeat
            .parse()
            .with_context(|| format!("repeat in {line:?}"))?;
        let mut push = |metric: &str, unit: &str, v: &str| {
            // "nan" (a failed iperf3) and "-" (no CPU figure) carry nothing.
            if let Ok(value) = v.parse::<f64>()
                && value.is_finite()
            {
                out.push(Sample {
                    bench: "tunnel".into(),
                    metric: format!("{metric}_{streams}"),
                    variant: variant.into(),
                    unit: unit.into(),
                    value,
                    round,
                });
            }
        };
        push("tcp_gbps", "Gbit/s", gbps);
        push("cpu_s_per_gb", "CPU-s/GB", cpu);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_tsv_rows_become_samples() {
        let tsv = "variant\tstreams\trepeat\tgbps\tcpu_s_per_gb\n\
                   bare-veth\t1\t1\t15.170\t-\n\
                   keyhole\t4\t2\t3.590\t2.51\n\
                   wireguard-go\t1\t1\tnan\tnan\n";
        let s = tunnel_samples(tsv).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].metric.as_str(), s[0].value), ("tcp_gbps_1", 15.17));
        assert_eq!((s[2].metric.as_str(), s[2].round), ("cpu_s_per_gb_4", 2));
        assert!(tunnel_samples("h\nonly\ttwo\n").is_err());
    }
}
