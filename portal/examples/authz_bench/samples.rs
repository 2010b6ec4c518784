//! Samples for `cargo xtask bench`: with `KEYHOLE_BENCH_RESULTS` set, each
//! figure is appended to that file as one JSON line (the format of
//! keyhole-tests-netns' `bench_results`, which the portal does not depend
//! on); `KEYHOLE_BENCH_ROUND` says which repeat this run is.

use std::io::Write as _;

pub fn record(metric: &str, variant: &str, unit: &str, value: f64) {
    let Some(path) = std::env::var_os("KEYHOLE_BENCH_RESULTS") else {
        return;
    };
    let round: u32 = std::env::var("KEYHOLE_BENCH_ROUND")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut line = serde_json::json!({
        "bench": "portal",
        "metric": metric,
        "variant": variant,
        "unit": unit,
        "value": value,
        "round": round,
    })
    .to_string();
    line.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "authz_bench: cannot append to {}: {e}",
            path.to_string_lossy()
        );
    }
}
