//! `cargo xtask bench`: every benchmark beside its anchor, in one run,
//! repeated, then one report: BENCHMARKS.md (medians, spread, ratio to the
//! anchor and the goal of each row), benchmarks/report.json and PNG charts.
//!
//! The benchmarks themselves stay runnable alone (each documents its own
//! command); here they run with `KEYHOLE_BENCH_RESULTS` naming a file they
//! append raw samples to (see keyhole-tests-netns' `bench_results`). The
//! samples of the last run of every benchmark are kept in
//! benchmarks/samples.jsonl, so `--only relay` re-measures the relay and
//! rewrites the report with the other benchmarks' last figures.

mod chart;
pub(crate) mod goals;
mod progress;
mod report;
pub(crate) mod samples;
mod suites;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::binaries::target_dir;
use crate::cmd::{output, workspace_root};
use samples::{Key, Sample};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmarks to run (comma-separated): tunnel, relay, filter, portal,
    /// flow, vm. All when omitted.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Repeats of every benchmark (each interleaves its variants per repeat).
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
    /// Short measurements (a smoke run of the whole suite, not figures to
    /// keep).
    #[arg(long)]
    pub quick: bool,
    /// Rewrite the report from the stored samples without measuring.
    #[arg(long)]
    pub report_only: bool,
}

/// Where the report lives, relative to the workspace root.
const REPORT_MD: &str = "BENCHMARKS.md";
const REPORT_DIR: &str = "benchmarks";

pub fn run_cmd(args: BenchArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let dir = root.join(REPORT_DIR);
    std::fs::create_dir_all(&dir)?;
    let stored = dir.join("samples.jsonl");
    let runs_path = dir.join("runs.json");
    let mut all = samples::read(&stored)?;
    let mut runs: Value = match std::fs::read_to_string(&runs_path) {
        Ok(t) => serde_json::from_str(&t).context("benchmarks/runs.json")?,
        Err(_) => json!({}),
    };
    let mut failures = Vec::new();
    if !args.report_only {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the benchmarks build network namespaces: run them as root");
        }
        for o in &args.only {
            if !suites::SUITES.iter().any(|s| s.id == o) {
                bail!(
                    "no benchmark `{o}`; there are: {}",
                    suites::SUITES
                        .iter()
                        .map(|s| s.id)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        anyhow::ensure!(args.repeats > 0, "--repeats must be at least 1");
        crate::setup::run()?;
        let chosen: Vec<&suites::Suite> = suites::SUITES
            .iter()
            .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.id))
            .collect();
        suites::build(&chosen)?;
        let logs = target_dir().join("bench-logs");
        std::fs::create_dir_all(&logs)?;
        let machine = machine();
        eprintln!("machine: {machine}");
        for (i, suite) in chosen.iter().enumerate() {
            let results = logs.join(format!("{}.samples.jsonl", suite.id));
            let _ = std::fs::remove_file(&results);
            let ctx = suites::Ctx {
                repeats: args.repeats,
                quick: args.quick,
                results: results.clone(),
                log: logs.join(format!("{}.log", suite.id)),
                label: format!("[{}/{}] {}", i + 1, chosen.len(), suite.title),
            };
            let _ = std::fs::remove_file(&ctx.log);
            let start = Instant::now();
            let outcome = (suite.run)(&ctx);
            let mut info = json!({
                "command": (suite.command)(&ctx),
                "finished": now(),
                "seconds": start.elapsed().as_secs_f64(),
                "machine": machine,
                "repeats": args.repeats,
                "quick": args.quick,
            });
            let fresh = samples::read(&results)?;
            match outcome {
                Ok(()) if !fresh.is_empty() => {
                    // The new samples replace the last run's of the same benchmarks.
                    all.retain(|s| !suite.benches.contains(&s.bench.as_str()));
                    all.extend(fresh);
                }
                Ok(()) => {
                    let e = format!("{} wrote no samples (log: {})", suite.id, ctx.log.display());
                    eprintln!("{e}");
                    info["error"] = json!(e);
                    failures.push(e);
                }
                Err(e) => {
                    // Earlier figures stay; the report says this run failed.
                    eprintln!("{e:#}");
                    info["error"] = json!(format!("{e:#}"));
                    failures.push(format!("{}: {e:#}", suite.id));
                }
            }
            for b in suite.benches {
                runs[*b] = info.clone();
            }
        }
        samples::write(&stored, &all)?;
        std::fs::write(&runs_path, serde_json::to_string_pretty(&runs)? + "\n")?;
    }
    write_report(&root, &dir, &all, &runs, &args)?;
    if !failures.is_empty() {
        bail!(
            "{} benchmark(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

fn write_report(
    root: &Path,
    dir: &Path,
    all: &[Sample],
    runs: &Value,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let order: Vec<Key> = all
        .iter()
        .map(|s| (s.bench.clone(), s.metric.clone(), s.variant.clone()))
        .collect();
    let summaries = samples::summarize(all);
    let lines = report::lines(&summaries, &order);
    let mut charts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for l in lines.iter().filter(|l| l.chart) {
        let key = (l.bench.to_owned(), l.metric.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let mine: Vec<&report::Line> = lines
            .iter()
            .filter(|x| x.bench == l.bench && x.metric == l.metric)
            .collect();
        let bars: Vec<chart::Bar> = mine
            .iter()
            .map(|x| chart::Bar {
                label: x.variant.clone(),
                median: x.summary.median,
                min: x.summary.min,
                max: x.summary.max,
            })
            .collect();
        let thresholds = goal_lines(l.bench, &l.metric, &summaries);
        let name = format!("{}-{}.png", l.bench, l.metric.replace('_', "-"));
        chart::draw(
            &dir.join(&name),
            &format!("{}: {}", title(l.bench), l.title),
            &l.summary.unit,
            &bars,
            &thresholds,
        )?;
        charts
            .entry(l.bench.to_owned())
            .or_default()
            .push(format!("{REPORT_DIR}/{name}"));
    }
    let header = report::Header {
        generated: now(),
        commit: commit(),
        machine: machine_of(runs),
        command: command_line(args),
    };
    let md = report::markdown(&header, &lines, runs, &charts);
    std::fs::write(root.join(REPORT_MD), &md)?;
    let json = report::json(&header, &lines, runs);
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    for l in lines.iter().filter(|l| !l.goals.is_empty()) {
        for (goal, met) in &l.goals {
            eprintln!(
                "{:<44} {:<24} {:>14} {:<6}  goal {goal}",
                format!("{}: {}", title(l.bench), l.title),
                l.variant,
                goals::number(l.summary.median),
                match met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "?",
                }
            );
        }
    }
    eprintln!("report: {}", root.join(REPORT_MD).display());
    Ok(())
}

/// Dashed lines for a chart: each goal of the row as a value on its axis.
fn goal_lines(
    bench: &str,
    metric: &str,
    summaries: &BTreeMap<Key, samples::Summary>,
) -> Vec<(f64, String)> {
    let Some(row) = goals::BENCHES
        .iter()
        .filter(|b| b.id == bench)
        .flat_map(|b| b.rows)
        .find(|r| r.metric == metric)
    else {
        return Vec::new();
    };
    let median = |v: &str| {
        summaries
            .get(&(bench.to_owned(), metric.to_owned(), v.to_owned()))
            .map(|s| s.median)
    };
    row.goals
        .iter()
        .filter_map(|g| {
            let value = match g.kind {
                goals::GoalKind::RatioAtLeast { of, ratio } => median(of)? * ratio,
                goals::GoalKind::AtLeast(v) | goals::GoalKind::AtMost(v) => v,
            };
            Some((value, format!("{}: {}", g.variant, g.text(""))))
        })
        .collect()
}

fn title(bench: &str) -> &'static str {
    goals::BENCHES
        .iter()
        .find(|b| b.id == bench)
        .map_or("?", |b| b.title)
}

fn command_line(args: &BenchArgs) -> String {
    let mut c = "cargo xtask bench".to_owned();
    if !args.only.is_empty() {
        c += &format!(" --only {}", args.only.join(","));
    }
    if args.repeats != 3 {
        c += &format!(" --repeats {}", args.repeats);
    }
    if args.quick {
        c += " --quick";
    }
    if args.report_only {
        c += " --report-only";
    }
    c
}

fn now() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn commit() -> String {
    let git = |args: &[&str]| {
        output(Command::new("git").current_dir(workspace_root()).args(args)).unwrap_or_default()
    };
    let sha = git(&["rev-parse", "--short", "HEAD"]).trim().to_owned();
    if git(&["status", "--porcelain", "--untracked-files=no"])
        .trim()
        .is_empty()
    {
        sha
    } else {
        format!("{sha} with local changes")
    }
}

/// CPU model, CPU count, memory and kernel of this machine, with its load.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{model}, {cpus} CPUs, {mem_gib:.0} GiB, Linux {}, load {load} at the start",
        kernel.trim()
    )
}

/// The machine line of the newest run in `runs`.
fn machine_of(runs: &Value) -> String {
    runs.as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|r| Some((r.get("finished")?.as_str()?, r.get("machine")?.as_str()?)))
        .max_by(|a, b| a.0.cmp(b.0))
        .map_or_else(machine, |(_, m)| m.to_owned())
}

/// The samples file a suite's benchmarks append to.
pub(crate) fn results_env(path: &Path) -> (&'static str, PathBuf) {
    ("KEYHOLE_BENCH_RESULTS", path.to_path_buf())
}
