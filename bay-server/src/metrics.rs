//! Prometheus metrics in the text exposition format, kept in process (no extra dependency).
//!
//! `GET /metrics` (bearer token required, like every non-public route: ship ids are not in it,
//! but load and error rates are operational data) exposes:
//! - `bay_ships{status}`: ship records by status (read at scrape time), warm-pool ships apart,
//! - `bay_ships_warm{state}`: warm-pool ships, `ready` or `starting`,
//! - `bay_sessions{state}`: relations, total and active,
//! - `bay_ship_creates_total{outcome}` and `bay_ship_create_duration_seconds`,
//! - `bay_exec_duration_seconds{type}` (allow-listed types only; process ids folded),
//! - `bay_http_errors_total{kind}`: error responses by kind (see [`crate::error::ErrorKind`]),
//! - `bay_http_requests_total{status}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use bay_core::service::Overview;

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Data {
    creates: BTreeMap<&'static str, u64>,
    create_latency: Histogram,
    exec_latency: BTreeMap<String, Histogram>,
    errors: BTreeMap<&'static str, u64>,
    requests: BTreeMap<u16, u64>,
}

/// The server's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    data: Mutex<Data>,
}

/// Folds `shell/process/<id>` into `shell/process/{id}` so labels stay bounded.
fn exec_label(exec_type: &str) -> String {
    let t = exec_type.trim_start_matches('/');
    if t.starts_with("shell/process/") {
        "shell/process/{id}".to_owned()
    } else {
        t.to_owned()
    }
}

impl Metrics {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `POST /ship` finished (`ok` or `error`) after `took`.
    pub fn record_create(&self, ok: bool, took: Duration) {
        let mut d = self.data();
        *d.creates
            .entry(if ok { "ok" } else { "error" })
            .or_default() += 1;
        d.create_latency.observe(took.as_secs_f64());
    }

    /// An exec of an allow-listed `exec_type` finished after `took`.
    pub fn record_exec(&self, exec_type: &str, took: Duration) {
        self.data()
            .exec_latency
            .entry(exec_label(exec_type))
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// A response was sent; `error_kind` when it was an error.
    pub fn record_response(&self, status: u16, error_kind: Option<&'static str>) {
        let mut d = self.data();
        *d.requests.entry(status).or_default() += 1;
        if let Some(kind) = error_kind {
            *d.errors.entry(kind).or_default() += 1;
        }
    }

    /// The exposition text, with ship and session gauges from `overview`.
    pub fn render(&self, overview: Option<&Overview>) -> String {
        let mut out = String::new();
        if let Some(o) = overview {
            out.push_str("# HELP bay_ships Ship records by status.\n# TYPE bay_ships gauge\n");
            for (status, n) in [
                ("running", o.ships.running),
                ("stopped", o.ships.stopped),
                ("creating", o.ships.creating),
            ] {
                let _ = writeln!(out, "bay_ships{{status=\"{status}\"}} {n}");
            }
            out.push_str(
                "# HELP bay_ships_warm Warm-pool ships (not in bay_ships): ready, or starting.\n# TYPE bay_ships_warm gauge\n",
            );
            for (state, n) in [("ready", o.ships.warm), ("starting", o.ships.warming)] {
                let _ = writeln!(out, "bay_ships_warm{{state=\"{state}\"}} {n}");
            }
            out.push_str(
                "# HELP bay_sessions Session-ship relations.\n# TYPE bay_sessions gauge\n",
            );
            let _ = writeln!(out, "bay_sessions{{state=\"total\"}} {}", o.sessions.total);
            let _ = writeln!(
                out,
                "bay_sessions{{state=\"active\"}} {}",
                o.sessions.active
            );
        }
        let d = self.data();
        out.push_str(
            "# HELP bay_ship_creates_total POST /ship requests by outcome.\n# TYPE bay_ship_creates_total counter\n",
        );
        for outcome in ["ok", "error"] {
            let n = d.creates.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "bay_ship_creates_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str(
            "# HELP bay_ship_create_duration_seconds Latency of POST /ship.\n# TYPE bay_ship_create_duration_seconds histogram\n",
        );
        d.create_latency
            .render(&mut out, "bay_ship_create_duration_seconds", "");
        out.push_str(
            "# HELP bay_exec_duration_seconds Latency of forwarded exec operations by type.\n# TYPE bay_exec_duration_seconds histogram\n",
        );
        for (t, h) in &d.exec_latency {
            h.render(
                &mut out,
                "bay_exec_duration_seconds",
                &format!("type=\"{t}\""),
            );
        }
        out.push_str(
            "# HELP bay_http_errors_total Error responses by kind.\n# TYPE bay_http_errors_total counter\n",
        );
        for (kind, n) in &d.errors {
            let _ = writeln!(out, "bay_http_errors_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str(
            "# HELP bay_http_requests_total Responses by status.\n# TYPE bay_http_requests_total counter\n",
        );
        for (status, n) in &d.requests {
            let _ = writeln!(out, "bay_http_requests_total{{status=\"{status}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.record_exec("/shell/process/0a1b2c3d", Duration::from_millis(20));
        m.record_exec("shell/process/ffffffff", Duration::from_secs(400));
        let text = m.render(None);
        assert!(
            text.contains(
                "bay_exec_duration_seconds_bucket{type=\"shell/process/{id}\",le=\"0.025\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("bay_exec_duration_seconds_count{type=\"shell/process/{id}\"} 2"),
            "{text}"
        );
    }
}
