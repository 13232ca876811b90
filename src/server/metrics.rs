//! Prometheus metrics, in the text exposition format.
//!
//! A handful of counters and histograms behind one mutex: the service
//! handles a few requests per second (generation is CPU-bound), so a lock
//! per request costs nothing measurable and keeps this dependency-free.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (c, &b) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= b {
                *c += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, b) in self.counts.iter().zip(BUCKETS) {
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

#[derive(Default)]
struct Tables {
    /// (route, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    /// route → latency to the response head.
    latency: BTreeMap<String, Histogram>,
    /// stage (retrieve, prefill, decode) → time.
    stages: BTreeMap<&'static str, Histogram>,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    tables: Mutex<Tables>,
    /// Tokens the model generated.
    pub generated_tokens: AtomicU64,
    /// Prompt tokens processed (the cached prefix excluded).
    pub prompt_tokens: AtomicU64,
    /// Answers that ended because the client went away or the deadline passed.
    pub cancelled: AtomicU64,
    /// Answers refused with 429.
    pub rejected: AtomicU64,
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        *t.requests.entry((route.to_string(), status)).or_default() += 1;
        t.latency
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    /// Records an answer's stage timings.
    pub fn answer(&self, a: &crate::answer::Answer) {
        self.generated_tokens
            .fetch_add(a.usage.completion_tokens as u64, Ordering::Relaxed);
        self.prompt_tokens.fetch_add(
            (a.usage.prompt_tokens - a.usage.cached_prompt_tokens) as u64,
            Ordering::Relaxed,
        );
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        for (stage, ms) in [
            ("retrieve", a.timings.retrieve_ms),
            ("prefill", a.timings.prefill_ms),
            ("decode", a.timings.decode_ms),
        ] {
            t.stages.entry(stage).or_default().observe(ms / 1e3);
        }
    }

    /// The exposition text; `queued` and `running` are read at scrape time.
    pub fn render(&self, queued: usize, running: usize) -> String {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP kbqa_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE kbqa_http_requests_total counter\n");
        for ((route, status), n) in &t.requests {
            let _ = writeln!(
                out,
                "kbqa_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP kbqa_http_request_duration_seconds Time to the response head.\n");
        out.push_str("# TYPE kbqa_http_request_duration_seconds histogram\n");
        for (route, h) in &t.latency {
            h.render(
                &mut out,
                "kbqa_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP kbqa_answer_stage_seconds Time per answer stage.\n");
        out.push_str("# TYPE kbqa_answer_stage_seconds histogram\n");
        for (stage, h) in &t.stages {
            h.render(
                &mut out,
                "kbqa_answer_stage_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        for (name, help, kind, value) in [
            (
                "kbqa_generated_tokens_total",
                "Tokens generated.",
                "counter",
                self.generated_tokens.load(Ordering::Relaxed),
            ),
            (
                "kbqa_prompt_tokens_total",
                "Prompt tokens processed (cached prefix excluded).",
                "counter",
                self.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "kbqa_answers_cancelled_total",
                "Answers stopped early: client gone, deadline or shutdown.",
                "counter",
                self.cancelled.load(Ordering::Relaxed),
            ),
            (
                "kbqa_answers_rejected_total",
                "Answers refused with 429 (queue full).",
                "counter",
                self.rejected.load(Ordering::Relaxed),
            ),
            (
                "kbqa_answer_queue_depth",
                "Answers waiting for a worker.",
                "gauge",
                queued as u64,
            ),
            (
                "kbqa_answers_running",
                "Answers being generated.",
                "gauge",
                running as u64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v1/search", 200, 0.02);
        m.request("/v1/search", 200, 3.0);
        m.request("/v1/ask", 429, 0.001);
        let text = m.render(2, 1);
        assert!(text.contains("kbqa_http_requests_total{route=\"/v1/search\",status=\"200\"} 2"));
        assert!(text.contains("kbqa_http_requests_total{route=\"/v1/ask\",status=\"429\"} 1"));
        assert!(text.contains(
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"5\"} 2"
        ));
        assert!(text.contains("kbqa_answer_queue_depth 2"));
        assert!(text.contains("kbqa_answers_running 1"));
    }
}
