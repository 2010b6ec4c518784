//! Benchmark samples from a VM run: a scenario prints one
//! `KEYHOLE-BENCH {json}` line per sample on the console (the format all
//! Keyhole benchmarks share, `crate::bench::samples::Sample`); here they
//! are appended to the file named by `KEYHOLE_BENCH_RESULTS` and
//! summarised (medians, ratio to the anchor the report uses).

use std::{io::Write as _, path::Path};

use anyhow::Context as _;

use crate::bench::goals::BENCHES;
use crate::bench::samples::{self, Sample};

/// Marks a sample line on the VM console.
pub const TAG: &str = "KEYHOLE-BENCH ";

/// The sample a console line carries, if it is one (a garbled line is
/// reported and skipped).
pub fn parse_line(line: &str) -> Option<Sample> {
    let json = line.split_once(TAG)?.1.trim();
    match Sample::parse(json) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("vm: ignoring a malformed bench line ({e:#}): {line}");
            None
        }
    }
}

/// Appends each sample as one line, one write each (concurrent appenders
/// do not interleave).
pub fn append(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for s in samples {
        f.write_all(format!("{}\n", s.to_json()).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The variant a metric's other variants are divided by: the report's
/// anchor for the row, else the second variant seen.
fn anchor(bench: &str, metric: &str, variants: &[&str]) -> Option<String> {
    BENCHES
        .iter()
        .filter(|b| b.id == bench)
        .flat_map(|b| b.rows)
        .find(|r| r.metric == metric)
        .and_then(|r| r.anchor)
        .map(str::to_owned)
        .or_else(|| variants.get(1).map(|v| (*v).to_owned()))
}

/// Prints per (metric, variant) the median, range and sample count, and
/// per metric each variant's ratio to the anchor.
pub fn summarize(scenario: &str, samples: &[Sample]) {
    let summaries = samples::summarize(samples);
    if summaries.is_empty() {
        return;
    }
    println!("vm-test {scenario}: benchmark figures (median, range, samples)");
    // Metrics and their variants in the order the scenario printed them.
    let mut metrics: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for s in samples {
        match metrics
            .iter_mut()
            .find(|(b, m, _)| *b == s.bench && *m == s.metric)
        {
            Some((_, _, v)) if !v.contains(&s.variant.as_str()) => v.push(&s.variant),
            Some(_) => {}
            None => metrics.push((&s.bench, &s.metric, vec![&s.variant])),
        }
    }
    for (bench, metric, variants) in metrics {
        let get = |v: &str| summaries.get(&(bench.to_owned(), metric.to_owned(), v.to_owned()));
        for variant in &variants {
            let Some(x) = get(variant) else { continue };
            println!(
                "  {metric:<22} {variant:<20} {:>12.3} {} ({:.3}..{:.3}, n={})",
                x.median, x.unit, x.min, x.max, x.n
            );
        }
        let Some(a) = anchor(bench, metric, &variants) else {
            continue;
        };
        let Some(base) = get(&a) else { continue };
        for variant in variants.iter().filter(|v| **v != a) {
            if let Some(x) = get(variant) {
                println!(
                    "  {metric:<22} ratio {variant} / {a} = {:.3}",
                    x.median / base.median
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_sample_lines_only() {
        let line = r#"KEYHOLE-BENCH {"bench":"vm_backend","metric":"tcp_mbps","variant":"kernel","unit":"Mbit/s","value":12.5,"round":1}"#;
        let v = parse_line(line).expect("a sample");
        assert_eq!((v.value, v.round), (12.5, 1));
        assert!(parse_line("vm: kernel 6.1, running scenario").is_none());
        assert!(parse_line("KEYHOLE-BENCH {not json").is_none());
        // A sample without its value is not one.
        assert!(
            parse_line(r#"KEYHOLE-BENCH {"bench":"b","metric":"m","variant":"v","round":1}"#)
                .is_none()
        );
    }
}
