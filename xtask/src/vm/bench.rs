//! Benchmark samples from a VM run: a scenario prints one
//! `KEYHOLE-BENCH {json}` line per sample on the console (the format all
//! Keyhole benchmarks share); here they are appended to the file named by
//! `KEYHOLE_BENCH_RESULTS` and summarised (medians, ratio to the anchor).

use std::{collections::BTreeMap, io::Write as _, path::Path};

use anyhow::Context as _;
use serde_json::Value;

/// Marks a sample line on the VM console.
pub const TAG: &str = "KEYHOLE-BENCH ";

/// The JSON of a console line that carries a sample, if it is one and
/// parses as a sample object (a garbled line is reported and skipped).
pub fn parse_line(line: &str) -> Option<Value> {
    let json = line.split_once(TAG)?.1.trim();
    match serde_json::from_str::<Value>(json) {
        Ok(v)
            if v["bench"].is_string()
                && v["metric"].is_string()
                && v["variant"].is_string()
                && v["value"].is_number()
                && v["round"].is_u64() =>
        {
            Some(v)
        }
        _ => {
            eprintln!("vm: ignoring a malformed bench line: {line}");
            None
        }
    }
}

/// Appends each sample as one line, one write each (concurrent appenders
/// do not interleave).
pub fn append(path: &Path, samples: &[Value]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for s in samples {
        f.write_all(format!("{s}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// (numerator, denominator) variants whose median ratio the summary shows,
/// per metric; other metrics compare their first two variants seen.
const ANCHORS: &[(&str, &str, &str)] = &[
    ("tcp_mbps", "kernel", "userspace"),
    ("udp64_pps", "kernel", "userspace"),
    ("filter_tcp_mbps", "kernel-filter-100k", "kernel-no-filter"),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A metric's unit and its variants' values, variants in the order seen.
type Metric = (String, Vec<(String, Vec<f64>)>);

/// Prints per (metric, variant) the median, range and sample count, and
/// per metric the ratio of its anchor pair's medians.
pub fn summarize(scenario: &str, samples: &[Value]) {
    let mut by_metric: BTreeMap<String, Metric> = BTreeMap::new();
    for s in samples {
        let (Some(metric), Some(variant), Some(value)) = (
            s["metric"].as_str(),
            s["variant"].as_str(),
            s["value"].as_f64(),
        ) else {
            continue;
        };
        let unit = s["unit"].as_str().unwrap_or("").to_owned();
        let entry = by_metric
            .entry(metric.to_owned())
            .or_insert_with(|| (unit, Vec::new()));
        match entry.1.iter_mut().find(|(v, _)| v == variant) {
            Some((_, values)) => values.push(value),
            None => entry.1.push((variant.to_owned(), vec![value])),
        }
    }
    if by_metric.is_empty() {
        return;
    }
    println!("vm-test {scenario}: benchmark figures (median, range, samples)");
    for (metric, (unit, variants)) in &mut by_metric {
        let mut medians = Vec::new();
        for (variant, values) in variants.iter_mut() {
            let m = median(values);
            let (lo, hi) = (values[0], values[values.len() - 1]);
            println!(
                "  {metric:<22} {variant:<20} {m:>12.3} {unit} ({lo:.3}..{hi:.3}, n={})",
                values.len()
            );
            medians.push((variant.clone(), m));
        }
        let pair = ANCHORS
            .iter()
            .find(|(m, _, _)| m == metric)
            .map(|(_, a, b)| (a.to_string(), b.to_string()))
            .or_else(|| match medians.as_slice() {
                [(a, _), (b, _), ..] => Some((a.clone(), b.clone())),
                _ => None,
            });
        if let Some((a, b)) = pair {
            let get = |name: &str| medians.iter().find(|(v, _)| v == name).map(|(_, m)| *m);
            if let (Some(x), Some(y)) = (get(&a), get(&b)) {
                println!("  {metric:<22} ratio {a} / {b} = {:.3}", x / y);
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
        assert_eq!(v["value"].as_f64(), Some(12.5));
        assert!(parse_line("vm: kernel 6.1, running scenario").is_none());
        assert!(parse_line("KEYHOLE-BENCH {not json").is_none());
        // A sample without its value is not one.
        assert!(
            parse_line(r#"KEYHOLE-BENCH {"bench":"b","metric":"m","variant":"v","round":1}"#)
                .is_none()
        );
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
