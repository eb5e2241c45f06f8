//! `cargo xtask bench [ship|transfer]`: measurements against baselines taken in the same run,
//! printed as a table (figure, baseline, ratio, budget met or not) and, for the full run, written
//! as JSON under `target/bench/`. Nothing is asserted on timings: the output is for people.
//!
//! - no target ([`full`]): bay-server (release, `docker-host`) side by side with the engine
//!   alone and the agent alone — creates, deletes, exec round trips, concurrency, memory;
//! - `ship` ([`ship`]): the ship agent in its image against `docker exec`;
//! - `transfer` ([`transfer`]): streaming a large file through bay-server.

mod docker;
mod full;
mod http;
mod server;
mod ship;
mod transfer;

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Target {
    /// The ship agent in its image.
    Ship,
    /// Streaming a large file through bay-server (upload and download) with the real driver.
    Transfer,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to benchmark; without one, the full side-by-side run of bay-server.
    #[arg(value_enum)]
    target: Option<Target>,
    /// Image to run (built with `cargo xtask ship-image` first when missing).
    #[arg(long, default_value = "ship:latest")]
    image: String,
    /// Round trips per HTTP measurement.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Round trips per `docker exec` baseline (`bench ship`; each takes tens of milliseconds).
    #[arg(long, default_value_t = 30)]
    baseline_runs: usize,
    /// Size of the file `bench transfer` streams, in MB.
    #[arg(long, default_value_t = 500)]
    size_mb: u64,
    /// Sequential creates per create figure (full run).
    #[arg(long, default_value_t = 20)]
    creates: usize,
    /// Concurrent creates, each from its own session (full run).
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    /// WARM_POOL_SIZE of the server that measures warm creates (full run).
    #[arg(long, default_value_t = 2)]
    pool_size: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.target {
        None => full::run(&args),
        Some(Target::Ship) => ship::run(&args),
        Some(Target::Transfer) => transfer::run(&args.image, args.size_mb),
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    median: Duration,
    p95: Duration,
    p99: Duration,
}

/// Runs `f` `runs` times and returns the percentiles of its durations.
pub(crate) fn sample(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Stats> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    Ok(stats(times))
}

/// Median, 95th and 99th percentile (nearest rank) of a non-empty sample.
pub(crate) fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Stats {
        median: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// `VmRSS` of a local process, in bytes (0 when it cannot be read).
pub(crate) fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

// ---------------------------------------------------------------------------------------------
// Output

/// The budget of a figure (issue 13 item 3).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Budget {
    /// at most this value, in the figure's unit
    Max(f64),
    /// at most this multiple of the baseline
    Ratio(f64),
}

/// One figure beside its baseline.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    metric: String,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    baseline_what: String,
    budget: Option<Budget>,
}

impl Row {
    pub(crate) fn new(
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_what: impl Into<String>,
        budget: Option<f64>,
    ) -> Self {
        Self {
            metric: metric.into(),
            value,
            unit,
            baseline: Some(baseline),
            baseline_what: baseline_what.into(),
            budget: budget.map(Budget::Max),
        }
    }

    /// A figure without a baseline.
    pub(crate) fn alone(metric: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            metric: metric.into(),
            value,
            unit,
            baseline: None,
            baseline_what: String::new(),
            budget: None,
        }
    }

    pub(crate) fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline
            .map(|b| self.value / b)
            .filter(|r| r.is_finite())
    }

    /// Whether the budget is met (`None` without a budget).
    fn met(&self) -> Option<bool> {
        Some(match self.budget? {
            Budget::Max(b) => self.value <= b,
            Budget::Ratio(r) => self.ratio().is_some_and(|x| x <= r),
        })
    }

    fn budget_text(&self) -> String {
        let Some(budget) = self.budget else {
            return String::new();
        };
        let limit = match budget {
            Budget::Max(b) => format!("<= {b} {}", self.unit),
            Budget::Ratio(r) => format!("<= {r}x"),
        };
        let verdict = if self.met() == Some(true) {
            "ok"
        } else {
            "OVER"
        };
        format!("{limit} {verdict}")
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_what": self.baseline_what,
            "ratio": self.ratio(),
            "budget": self.budget.map(|b| match b {
                Budget::Max(v) => serde_json::json!({"max": v}),
                Budget::Ratio(r) => serde_json::json!({"max_ratio": r}),
            }),
            "met": self.met(),
        })
    }
}

pub(crate) fn print_table(title: &str, rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!();
    println!("{title}");
    println!(
        "{:<width$} {:>13} {:>13} {:>8}  {:<20} baseline",
        "metric", "value", "baseline", "ratio", "budget"
    );
    for r in rows {
        let ratio = match r.ratio() {
            None => "-".to_owned(),
            Some(x) if x.abs() < 0.1 => format!("{x:.4}x"),
            Some(x) => format!("{x:.2}x"),
        };
        let baseline = r
            .baseline
            .map_or_else(|| "-".to_owned(), |b| format!("{b:.2} {}", r.unit));
        println!(
            "{:<width$} {:>13} {:>13} {:>8}  {:<20} {}",
            r.metric,
            format!("{:.2} {}", r.value, r.unit),
            baseline,
            ratio,
            r.budget_text(),
            r.baseline_what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let times: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let s = stats(times);
        assert_eq!(s.median, Duration::from_millis(100));
        assert_eq!(s.p95, Duration::from_millis(190));
        assert_eq!(s.p99, Duration::from_millis(198));
        let one = stats(vec![Duration::from_millis(7)]);
        assert_eq!(
            (one.median, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }

    #[test]
    fn budgets_compare_values_and_ratios() {
        let r = Row::new("x", 11.0, "ms", 10.0, "b", None).budget(Budget::Ratio(1.1));
        assert_eq!(r.met(), Some(true));
        let r = Row::new("x", 11.5, "ms", 10.0, "b", None).budget(Budget::Ratio(1.1));
        assert_eq!(r.met(), Some(false));
        assert_eq!(
            Row::alone("f", 0.0, "").budget(Budget::Max(0.0)).met(),
            Some(true)
        );
        assert_eq!(
            Row::alone("f", 1.0, "").budget(Budget::Max(0.0)).met(),
            Some(false)
        );
        assert_eq!(Row::alone("f", 1.0, "").met(), None);
        // no baseline: a ratio budget cannot be met
        assert_eq!(
            Row::alone("f", 1.0, "").budget(Budget::Ratio(2.0)).met(),
            Some(false)
        );
        assert!(Row::new("x", 1.0, "ms", 0.0, "b", None).ratio().is_none());
    }
}
