//! BENCHMARKS.md and report.json from the samples: per benchmark a table
//! of medians, spread and ratio to the anchor, each row with its goal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::goals::{BENCHES, Bench, Goal, Row, number};
use super::samples::{Key, Summary};

/// One table line: a variant of a metric.
pub struct Line {
    pub bench: &'static str,
    pub metric: String,
    pub title: String,
    pub variant: String,
    pub summary: Summary,
    pub anchor: Option<String>,
    /// median / median(anchor), when the anchor ran.
    pub ratio: Option<f64>,
    pub goals: Vec<(String, Option<bool>)>,
    pub chart: bool,
}

/// Lines of every benchmark, in the order of `goals::BENCHES` (rows in
/// their listed order, then unlisted metrics; variants in first-seen
/// order of the samples).
pub fn lines(summaries: &BTreeMap<Key, Summary>, order: &[Key]) -> Vec<Line> {
    let mut out = Vec::new();
    for bench in BENCHES {
        let mut metrics: Vec<(String, Option<&Row>)> = bench
            .rows
            .iter()
            .map(|r| (r.metric.to_owned(), Some(r)))
            .collect();
        for (b, m, _) in order {
            if b == bench.id && !metrics.iter().any(|(x, _)| x == m) {
                metrics.push((m.clone(), None));
            }
        }
        for (metric, row) in metrics {
            let variants: Vec<&String> = {
                let mut v: Vec<&String> = Vec::new();
                for (b, m, var) in order {
                    if b == bench.id && *m == metric && !v.contains(&var) {
                        v.push(var);
                    }
                }
                v
            };
            let median = |variant: &str| {
                summaries
                    .get(&(bench.id.to_owned(), metric.clone(), variant.to_owned()))
                    .map(|s| s.median)
            };
            let anchor = row.and_then(|r| r.anchor);
            for variant in variants {
                let key = (bench.id.to_owned(), metric.clone(), variant.clone());
                let Some(summary) = summaries.get(&key) else {
                    continue;
                };
                let goals: Vec<(String, Option<bool>)> = row
                    .map(|r| r.goals)
                    .unwrap_or(&[])
                    .iter()
                    .filter(|g: &&Goal| g.variant == variant.as_str())
                    .map(|g| (g.text(&summary.unit), g.met(median)))
                    .collect();
                out.push(Line {
                    bench: bench.id,
                    metric: metric.clone(),
                    title: row.map_or_else(|| metric.clone(), |r| r.title.to_owned()),
                    variant: variant.clone(),
                    summary: summary.clone(),
                    anchor: anchor.map(str::to_owned),
                    ratio: anchor.and_then(median).map(|a| summary.median / a),
                    goals,
                    chart: row.is_some_and(|r| r.chart),
                });
            }
        }
    }
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "no data",
    }
}

/// What the report says about the run as a whole.
pub struct Header {
    pub generated: String,
    pub commit: String,
    pub machine: String,
    pub command: String,
}

pub fn markdown(
    header: &Header,
    lines: &[Line],
    runs: &Value,
    charts: &BTreeMap<String, Vec<String>>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Keyhole benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `{}` on {} at commit `{}`.\n\nMachine: {}.\n\n\
         Every benchmark runs beside its anchor in the same run, repeated; figures \
         are medians, spread is min–max over the repeats, n counts them. These \
         machines are shared and noisy: compare ratios within a run, not absolute \
         figures across runs.\n",
        header.command, header.generated, header.commit, header.machine
    );
    let goal_lines: Vec<&Line> = lines.iter().filter(|l| !l.goals.is_empty()).collect();
    if !goal_lines.is_empty() {
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(
            md,
            "| Benchmark | Row | Variant | Median | Goal | Verdict |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for l in goal_lines {
            for (goal, met) in &l.goals {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {goal} | {} |",
                    title_of(l.bench),
                    l.title,
                    l.variant,
                    figure(l),
                    verdict(*met)
                );
            }
        }
        md.push('\n');
    }
    for bench in BENCHES {
        let mine: Vec<&Line> = lines.iter().filter(|l| l.bench == bench.id).collect();
        let _ = writeln!(md, "## {}\n", bench.title);
        let _ = writeln!(md, "{}\n", bench.about);
        if let Some(run) = runs.get(bench.id) {
            if let Some(c) = run.get("command").and_then(Value::as_str) {
                let _ = writeln!(md, "Command: `{c}`");
            }
            if let (Some(at), Some(s)) = (
                run.get("finished").and_then(Value::as_str),
                run.get("seconds").and_then(Value::as_f64),
            ) {
                let _ = writeln!(md, "Last run: {at}, {s:.0} s.");
            }
            if let Some(e) = run.get("error").and_then(Value::as_str) {
                let _ = writeln!(md, "\n**The last run failed:** {e}");
            }
            md.push('\n');
        }
        if mine.is_empty() {
            let _ = writeln!(md, "Not measured yet.\n");
            continue;
        }
        let _ = writeln!(
            md,
            "| Row | Variant | Median | Spread | n | × anchor | Goal | Verdict |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for l in &mine {
            let ratio = match (&l.anchor, l.ratio) {
                (Some(a), Some(r)) if *a != l.variant => format!("{r:.2} × {a}"),
                (Some(a), _) if *a == l.variant => "anchor".to_owned(),
                _ => "–".to_owned(),
            };
            let (goal, met) = if l.goals.is_empty() {
                ("–".to_owned(), "".to_owned())
            } else {
                (
                    l.goals
                        .iter()
                        .map(|(g, _)| g.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                    l.goals
                        .iter()
                        .map(|(_, m)| verdict(*m))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}–{} | {} | {ratio} | {goal} | {met} |",
                l.title,
                l.variant,
                figure(l),
                number(l.summary.min),
                number(l.summary.max),
                l.summary.n
            );
        }
        md.push('\n');
        for png in charts.get(bench.id).into_iter().flatten() {
            let _ = writeln!(md, "![{}]({png})\n", bench.title);
        }
    }
    md
}

fn title_of(id: &str) -> &'static str {
    BENCHES
        .iter()
        .find(|b: &&Bench| b.id == id)
        .map_or("?", |b| b.title)
}

fn figure(l: &Line) -> String {
    format!("{} {}", number(l.summary.median), l.summary.unit)
}

pub fn json(header: &Header, lines: &[Line], runs: &Value) -> Value {
    let rows: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({
                "bench": l.bench,
                "metric": l.metric,
                "title": l.title,
                "variant": l.variant,
                "unit": l.summary.unit,
                "median": l.summary.median,
                "min": l.summary.min,
                "max": l.summary.max,
                "n": l.summary.n,
                "anchor": l.anchor,
                "ratio_to_anchor": l.ratio,
                "goals": l.goals.iter().map(|(g, m)| json!({"goal": g, "met": m})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "generated": header.generated,
        "commit": header.commit,
        "machine": header.machine,
        "command": header.command,
        "runs": runs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::super::samples::{Sample, summarize};
    use super::*;

    fn sample(metric: &str, variant: &str, value: f64, round: u32) -> Sample {
        Sample {
            bench: "relay".into(),
            metric: metric.into(),
            variant: variant.into(),
            unit: "packets/s".into(),
            value,
            round,
        }
    }

    #[test]
    fn rows_carry_ratios_goals_and_unlisted_metrics() {
        let samples = vec![
            sample("pps", "keyhole-relay XDP", 1.2e6, 1),
            sample("pps", "keyhole-relay userspace", 9.0e4, 1),
            sample("pps", "coturn turnserver", 1.0e5, 1),
            sample("surprise", "coturn turnserver", 7.0, 1),
        ];
        let order: Vec<Key> = samples
            .iter()
            .map(|s| (s.bench.clone(), s.metric.clone(), s.variant.clone()))
            .collect();
        let lines = lines(&summarize(&samples), &order);
        assert_eq!(lines.len(), 4);
        let xdp = &lines[0];
        assert_eq!(xdp.variant, "keyhole-relay XDP");
        assert!((xdp.ratio.unwrap() - 12.0).abs() < 1e-9);
        assert_eq!(xdp.goals[0].1, Some(true));
        assert_eq!(lines[1].goals[0].1, Some(false));
        assert!(lines[2].goals.is_empty());
        assert_eq!(lines[3].metric, "surprise");
        let header = Header {
            generated: "now".into(),
            commit: "abc".into(),
            machine: "test".into(),
            command: "cargo xtask bench".into(),
        };
        let md = markdown(&header, &lines, &json!({}), &BTreeMap::new());
        assert!(md.contains("| Relayed packets/s | keyhole-relay XDP | 1,200,000 packets/s |"));
        assert!(md.contains("12.00 × coturn turnserver"));
        assert!(md.contains("**not met**"));
        assert!(md.contains("## Gateway failover\n\n"));
        assert!(md.contains("Not measured yet."));
    }
}
