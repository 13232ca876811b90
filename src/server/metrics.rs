//! Prometheus metrics, served at `/metrics`.
//!
//! Exports [`Metrics`], the service's counters and histograms (what the
//! request middleware and the answer handlers record, and what a scrape
//! renders), and [`CONTENT_TYPE`], the media type of [`Metrics::render`]'s
//! text.
//!
//! The exposition is written by `prometheus-client`, the Prometheus project's
//! Rust client, in the Prometheus text format (version 0.0.4): escaping label
//! values and help text, the `_total` suffix of counters, cumulative
//! histogram buckets with Go-style `le` bounds and the `+Inf` bucket are the
//! library's job, not ours. The exposed names, labels, types and buckets are
//! what dashboards and the integration tests read, so they must not change:
//!
//! | name                                      | type      | labels            |
//! |-------------------------------------------|-----------|-------------------|
//! | `kbqa_http_requests_total`                | counter   | `route`, `status` |
//! | `kbqa_http_request_duration_seconds`      | histogram | `route`           |
//! | `kbqa_answer_stage_seconds`               | histogram | `stage`           |
//! | `kbqa_generated_tokens_total`             | counter   |                   |
//! | `kbqa_prompt_tokens_total`                | counter   |                   |
//! | `kbqa_answers_cancelled_total`            | counter   |                   |
//! | `kbqa_answers_rejected_total`             | counter   |                   |
//! | `kbqa_answer_queue_depth`                 | gauge     |                   |
//! | `kbqa_answers_running`                    | gauge     |                   |
//!
//! Counters are registered without `_total` (the library appends it), help
//! texts without their final full stop (the library appends it too). The
//! two gauges are read from the worker pool at scrape time, so they are not
//! stored here but encoded from a registry built per scrape.

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::answer::Answer;

/// The `Content-Type` of [`Metrics::render`]'s text:
/// `text/plain; version=0.0.4; charset=utf-8`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implicit).
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A histogram with [`BUCKETS`] (a `Family`'s constructor).
fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Labels of `kbqa_http_requests_total`, in this order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// Labels of `kbqa_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Labels of `kbqa_answer_stage_seconds`: `retrieve`, `prefill` or `decode`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// The service's counters and histograms. Recording takes `&self`; the
/// metrics are shared with the registry (each is an `Arc` inside).
pub struct Metrics {
    /// Everything below, in exposition order.
    registry: Registry,
    /// (route, status) → requests.
    requests: Family<RequestLabels, Counter>,
    /// route → time to the response head.
    latency: Family<RouteLabels, Histogram>,
    /// stage → time.
    stages: Family<StageLabels, Histogram>,
    /// Tokens the model generated.
    generated_tokens: Counter,
    /// Prompt tokens processed (the cached prefix excluded).
    prompt_tokens: Counter,
    /// Answers that ended because the client went away or the deadline passed.
    cancelled: Counter,
    /// Answers refused with 429.
    rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RouteLabels, Histogram> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let stages: Family<StageLabels, Histogram> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let generated_tokens: Counter = Counter::default();
        let prompt_tokens: Counter = Counter::default();
        let cancelled: Counter = Counter::default();
        let rejected: Counter = Counter::default();

        let mut registry = Registry::default();
        registry.register(
            "kbqa_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "kbqa_http_request_duration_seconds",
            "Time to the response head",
            latency.clone(),
        );
        registry.register(
            "kbqa_answer_stage_seconds",
            "Time per answer stage",
            stages.clone(),
        );
        registry.register(
            "kbqa_generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "kbqa_prompt_tokens",
            "Prompt tokens processed (cached prefix excluded)",
            prompt_tokens.clone(),
        );
        registry.register(
            "kbqa_answers_cancelled",
            "Answers stopped early: client gone, deadline or shutdown",
            cancelled.clone(),
        );
        registry.register(
            "kbqa_answers_rejected",
            "Answers refused with 429 (queue full)",
            rejected.clone(),
        );

        Metrics {
            registry,
            requests,
            latency,
            stages,
            generated_tokens,
            prompt_tokens,
            cancelled,
            rejected,
        }
    }
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Records an answer's token counts and stage timings.
    pub fn answer(&self, a: &Answer) {
        self.generated_tokens
            .inc_by(a.usage.completion_tokens as u64);
        self.prompt_tokens.inc_by(
            a.usage
                .prompt_tokens
                .saturating_sub(a.usage.cached_prompt_tokens) as u64,
        );
        for (stage, ms) in [
            ("retrieve", a.timings.retrieve_ms),
            ("prefill", a.timings.prefill_ms),
            ("decode", a.timings.decode_ms),
        ] {
            self.stages
                .get_or_create(&StageLabels { stage })
                .observe(ms / 1e3);
        }
    }

    /// Counts an answer stopped early (client gone, deadline or shutdown).
    pub fn cancelled(&self) {
        self.cancelled.inc();
    }

    /// Counts an answer refused with 429 because the queue was full.
    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// The exposition text ([`CONTENT_TYPE`]); `queued` and `running` are
    /// read at scrape time.
    pub fn render(&self, queued: usize, running: usize) -> String {
        let mut gauges = Registry::default();
        gauges.register(
            "kbqa_answer_queue_depth",
            "Answers waiting for a worker",
            ConstGauge::new(queued as u64),
        );
        gauges.register(
            "kbqa_answers_running",
            "Answers being generated",
            ConstGauge::new(running as u64),
        );
        let mut out = String::new();
        for registry in [&self.registry, &gauges] {
            // Writing to a `String` does not fail, and no value here is out
            // of the encoder's range; an error would be a library bug, so
            // the scrape gets what was written rather than a panic.
            if let Err(e) = prometheus_text::encode(&mut out, registry) {
                tracing::error!(error = %e, "encoding the metrics failed");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `le` labels, as the format (and today's dashboards) spell them.
    const LE: [&str; 15] = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
        "120", "+Inf",
    ];

    /// An answer with these token counts and stage times (ms).
    fn answer(prompt: usize, cached: usize, completion: usize, ms: [f64; 3]) -> Answer {
        serde_json::from_value(serde_json::json!({
            "question": "q",
            "answer": "a",
            "grounded": true,
            "language": "en",
            "citations": [],
            "passages": [],
            "model": "m",
            "usage": {
                "prompt_tokens": prompt,
                "cached_prompt_tokens": cached,
                "completion_tokens": completion,
            },
            "timings": {
                "retrieve_ms": ms[0],
                "prefill_ms": ms[1],
                "decode_ms": ms[2],
                "total_ms": ms[0] + ms[1] + ms[2],
            },
        }))
        .expect("a minimal Answer")
    }

    /// A histogram's lines for one observation of `value`, with `labels`
    /// (`key="value"`, without braces) before `le`.
    fn one_observation(name: &str, labels: &str, value: f64, sum: &str) -> Vec<String> {
        let mut lines: Vec<String> = LE
            .iter()
            .zip(BUCKETS.iter().copied().chain([f64::INFINITY]))
            .map(|(le, bound)| {
                let n = u8::from(value <= bound);
                format!("{name}_bucket{{{labels},le=\"{le}\"}} {n}")
            })
            .collect();
        lines.push(format!("{name}_sum{{{labels}}} {sum}"));
        lines.push(format!("{name}_count{{{labels}}} 1"));
        lines
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v1/search", 200, 0.02);
        m.request("/v1/search", 200, 3.0);
        m.request("/v1/ask", 429, 0.001);
        let text = m.render(2, 1);
        for line in [
            "# HELP kbqa_http_requests_total HTTP requests by route and status.",
            "# TYPE kbqa_http_requests_total counter",
            "kbqa_http_requests_total{route=\"/v1/search\",status=\"200\"} 2",
            "kbqa_http_requests_total{route=\"/v1/ask\",status=\"429\"} 1",
            "# TYPE kbqa_http_request_duration_seconds histogram",
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.01\"} 0",
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.025\"} 1",
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"2.5\"} 1",
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"5\"} 2",
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"} 2",
            "kbqa_http_request_duration_seconds_count{route=\"/v1/search\"} 2",
            "kbqa_http_request_duration_seconds_bucket{route=\"/v1/ask\",le=\"0.005\"} 1",
            "kbqa_http_request_duration_seconds_count{route=\"/v1/ask\"} 1",
            "# TYPE kbqa_answer_queue_depth gauge",
            "kbqa_answer_queue_depth 2",
            "kbqa_answers_running 1",
        ] {
            assert!(has_line(&text, line), "{line} missing:\n{text}");
        }
        // Prometheus text, not OpenMetrics.
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn renders_every_line_exactly() {
        let m = Metrics::default();
        m.request("/v1/ask", 200, 0.3);
        m.answer(&answer(120, 20, 30, [12.5, 250.0, 1500.0]));
        m.cancelled();
        m.rejected();
        m.rejected();
        let text = m.render(3, 1);

        let mut expected: Vec<String> = [
            "# HELP kbqa_http_requests_total HTTP requests by route and status.",
            "# TYPE kbqa_http_requests_total counter",
            "kbqa_http_requests_total{route=\"/v1/ask\",status=\"200\"} 1",
            "# HELP kbqa_http_request_duration_seconds Time to the response head.",
            "# TYPE kbqa_http_request_duration_seconds histogram",
            "# HELP kbqa_answer_stage_seconds Time per answer stage.",
            "# TYPE kbqa_answer_stage_seconds histogram",
            "# HELP kbqa_generated_tokens_total Tokens generated.",
            "# TYPE kbqa_generated_tokens_total counter",
            "kbqa_generated_tokens_total 30",
            "# HELP kbqa_prompt_tokens_total Prompt tokens processed (cached prefix excluded).",
            "# TYPE kbqa_prompt_tokens_total counter",
            "kbqa_prompt_tokens_total 100",
            "# HELP kbqa_answers_cancelled_total Answers stopped early: client gone, deadline or shutdown.",
            "# TYPE kbqa_answers_cancelled_total counter",
            "kbqa_answers_cancelled_total 1",
            "# HELP kbqa_answers_rejected_total Answers refused with 429 (queue full).",
            "# TYPE kbqa_answers_rejected_total counter",
            "kbqa_answers_rejected_total 2",
            "# HELP kbqa_answer_queue_depth Answers waiting for a worker.",
            "# TYPE kbqa_answer_queue_depth gauge",
            "kbqa_answer_queue_depth 3",
            "# HELP kbqa_answers_running Answers being generated.",
            "# TYPE kbqa_answers_running gauge",
            "kbqa_answers_running 1",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        expected.extend(one_observation(
            "kbqa_http_request_duration_seconds",
            "route=\"/v1/ask\"",
            0.3,
            "0.3",
        ));
        for (stage, seconds, sum) in [
            ("retrieve", 0.0125, "0.0125"),
            ("prefill", 0.25, "0.25"),
            ("decode", 1.5, "1.5"),
        ] {
            expected.extend(one_observation(
                "kbqa_answer_stage_seconds",
                &format!("stage=\"{stage}\""),
                seconds,
                sum,
            ));
        }

        // Every line, and no other: label sets within a family come in no
        // fixed order, so compare sorted.
        let mut actual: Vec<&str> = text.lines().collect();
        actual.sort_unstable();
        expected.sort_unstable();
        assert_eq!(actual, expected, "\n{text}");

        // Each sample follows its own family's HELP and TYPE lines.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default();
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(family),
                    "{line} after TYPE {family}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn before_any_traffic_the_plain_counters_read_zero() {
        let text = Metrics::default().render(0, 0);
        for line in [
            "kbqa_generated_tokens_total 0",
            "kbqa_prompt_tokens_total 0",
            "kbqa_answers_cancelled_total 0",
            "kbqa_answers_rejected_total 0",
            "kbqa_answer_queue_depth 0",
            "kbqa_answers_running 0",
        ] {
            assert!(has_line(&text, line), "{line} missing:\n{text}");
        }
        // A labelled family with no series yet is left out, HELP and all.
        assert!(!text.contains("kbqa_http_requests_total"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.request("/a\"b\\c", 404, 0.1);
        let text = m.render(0, 0);
        assert!(
            has_line(
                &text,
                "kbqa_http_requests_total{route=\"/a\\\"b\\\\c\",status=\"404\"} 1"
            ),
            "{text}"
        );
    }
}
