//! Raw benchmark samples (one JSON object per line, as keyhole-tests-netns'
//! `bench_results` writes them) and their medians and spread.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub bench: String,
    pub metric: String,
    pub variant: String,
    pub unit: String,
    pub value: f64,
    pub round: u32,
}

impl Sample {
    pub fn parse(line: &str) -> anyhow::Result<Sample> {
        let v: Value = serde_json::from_str(line)?;
        let text = |k: &str| -> anyhow::Result<String> {
            match v.get(k).and_then(Value::as_str) {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => bail!("no `{k}` string"),
            }
        };
        let value = v
            .get("value")
            .and_then(Value::as_f64)
            .context("no numeric `value`")?;
        let round = v
            .get("round")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .context("no `round`")?;
        Ok(Sample {
            bench: text("bench")?,
            metric: text("metric")?,
            variant: text("variant")?,
            unit: text("unit")?,
            value,
            round,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "bench": self.bench, "metric": self.metric, "variant": self.variant,
            "unit": self.unit, "value": self.value, "round": self.round,
        })
    }
}

/// Reads a samples file; a missing file is empty. Lines that are not
/// samples are an error naming the line, not silently dropped.
pub fn read(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Sample::parse(l).with_context(|| format!("{}:{}: {l}", path.display(), i + 1))
        })
        .collect()
}

pub fn write(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.to_json().to_string());
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Median and spread of one (bench, metric, variant).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub type Key = (String, String, String);

/// Summaries by (bench, metric, variant). NaN samples (a failed round)
/// are left out of the figures.
pub fn summarize(samples: &[Sample]) -> BTreeMap<Key, Summary> {
    let mut groups: BTreeMap<Key, (String, Vec<f64>)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.value.is_finite()) {
        groups
            .entry((s.bench.clone(), s.metric.clone(), s.variant.clone()))
            .or_insert_with(|| (s.unit.clone(), Vec::new()))
            .1
            .push(s.value);
    }
    groups
        .into_iter()
        .map(|(k, (unit, mut v))| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let median = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            let summary = Summary {
                unit,
                median,
                min: v[0],
                max: v[n - 1],
                n,
            };
            (k, summary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(variant: &str, value: f64, round: u32) -> Sample {
        Sample {
            bench: "relay".into(),
            metric: "pps".into(),
            variant: variant.into(),
            unit: "packets/s".into(),
            value,
            round,
        }
    }

    #[test]
    fn a_sample_round_trips_and_bad_lines_are_refused() {
        let a = s("coturn", 1.5e5, 2);
        assert_eq!(Sample::parse(&a.to_json().to_string()).unwrap(), a);
        for bad in [
            "",
            "{}",
            r#"{"bench":"b","metric":"m","variant":"v","unit":"u","value":"1","round":1}"#,
            r#"{"bench":"b","metric":"m","variant":"","unit":"u","value":1,"round":1}"#,
            r#"{"bench":"b","metric":"m","variant":"v","unit":"u","value":1,"round":-1}"#,
        ] {
            assert!(Sample::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts_and_nan_left_out() {
        let v = [
            s("xdp", 5.0, 1),
            s("xdp", 1.0, 2),
            s("xdp", 3.0, 3),
            s("coturn", 4.0, 1),
            s("coturn", 2.0, 2),
            s("coturn", f64::NAN, 3),
        ];
        let m = summarize(&v);
        let key = |v: &str| ("relay".to_owned(), "pps".to_owned(), v.to_owned());
        let xdp = &m[&key("xdp")];
        assert_eq!((xdp.median, xdp.min, xdp.max, xdp.n), (3.0, 1.0, 5.0, 3));
        let c = &m[&key("coturn")];
        assert_eq!((c.median, c.min, c.max, c.n), (3.0, 2.0, 4.0, 2));
    }
}
