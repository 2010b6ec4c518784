//! Benchmark samples for `cargo xtask bench`: when `KEYHOLE_BENCH_RESULTS`
//! names a file, each measured sample is appended to it as one JSON line
//! (`bench`, `metric`, `variant`, `unit`, `value`, `round`); xtask computes
//! medians and spread from the raw samples. Without the variable nothing is
//! written, so the benchmarks run alone exactly as before.

use std::io::Write as _;

use anyhow::{Context as _, Result};

/// Environment variable naming the results file.
pub const RESULTS_ENV: &str = "KEYHOLE_BENCH_RESULTS";

/// One measured sample; `round` counts from 1.
pub struct Sample<'a> {
    pub bench: &'a str,
    pub metric: &'a str,
    pub variant: &'a str,
    pub unit: &'a str,
    pub value: f64,
    pub round: u32,
}

/// Appends `sample` to the results file, if one is set. One `write` per
/// line, so samples of concurrent writers never interleave.
pub fn record(sample: Sample<'_>) -> Result<()> {
    let Some(path) = std::env::var_os(RESULTS_ENV) else {
        return Ok(());
    };
    let mut line = serde_json::json!({
        "bench": sample.bench,
        "metric": sample.metric,
        "variant": sample.variant,
        "unit": sample.unit,
        "value": sample.value,
        "round": sample.round,
    })
    .to_string();
    line.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("appending a sample to {}", path.to_string_lossy()))
}
