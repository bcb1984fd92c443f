//! Prometheus metrics of the worker, on its own `--metrics-port`.
//!
//! Contract: the names, labels and buckets the Python worker exports too
//! (src/zmqflow/worker_metrics.py; notes: shared contract):
//! - `zmqflow_worker_tasks_handled_total{service}`: tasks whose handler returned;
//! - `zmqflow_worker_task_failures_total{service}`: tasks whose handler
//!   failed or panicked;
//! - `zmqflow_worker_handler_duration_seconds{service}`: every handler run
//!   (buckets [`HANDLER_BUCKETS`]);
//! - `zmqflow_worker_info{worker_id,language,version}` = 1.
//!
//! A task no handler ran for (a service not served here, a malformed task)
//! is not counted: the forwarder counts it among its failed tasks, and a
//! label per unknown service name would let the sender make series at will.
//!
//! The services offered start at zero, so rates exist from the first scrape.
//! Handler threads count through handles made once per service (atomic
//! counters, no map lookup by label on the hot path). [`Metrics::render`]
//! is the OpenMetrics text format (prometheus-client's encoder), which
//! Prometheus asks for first and which writes bucket bounds as the Python
//! client does (`le="1.0"`; the client's 0.0.4 encoder writes Go's `le="1"`,
//! a different series to a Prometheus 2 summing buckets across languages);
//! [`serve`] answers `GET /metrics` on 0.0.0.0:PORT from a thread
//! (tiny_http), 404 elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{info, warn};
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// What [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Handler duration buckets in seconds, as the Python worker has them.
pub const HANDLER_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    worker_id: String,
    language: String,
    version: String,
}

/// How a task ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned an output.
    Handled,
    /// The handler returned an error or panicked.
    Failed,
}

fn new_histogram() -> Histogram {
    Histogram::new(HANDLER_BUCKETS)
}

/// One service's handles.
struct ServiceMetrics {
    handled: Counter,
    failures: Counter,
    duration: Histogram,
}

/// The worker's registry and the handles the handler threads count through.
pub struct Metrics {
    registry: Registry,
    services: HashMap<String, ServiceMetrics>,
}

impl Metrics {
    pub fn new(worker_id: &str, version: &str, services: &[String]) -> Metrics {
        let mut registry = Registry::with_prefix("zmqflow_worker");
        let handled = Family::<ServiceLabel, Counter>::default();
        let failures = Family::<ServiceLabel, Counter>::default();
        let duration = Family::<ServiceLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram,
        );
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "tasks_handled",
            "Tasks whose handler returned",
            handled.clone(),
        );
        registry.register(
            "task_failures",
            "Tasks whose handler failed, or whose service is not served here",
            failures.clone(),
        );
        registry.register_with_unit(
            "handler_duration",
            "Time spent in the handler",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register("info", "This worker", info.clone());
        info.get_or_create(&InfoLabels {
            worker_id: worker_id.to_owned(),
            language: "rust".to_owned(),
            version: version.to_owned(),
        })
        .set(1);
        let services = services
            .iter()
            .map(|name| {
                let label = ServiceLabel {
                    service: name.clone(),
                };
                let handles = ServiceMetrics {
                    handled: handled.get_or_create_owned(&label),
                    failures: failures.get_or_create_owned(&label),
                    duration: duration.get_or_create_owned(&label),
                };
                (name.clone(), handles)
            })
            .collect();
        Metrics { registry, services }
    }

    /// Count one handler run of `service` (one we offer: others are not
    /// counted); `elapsed` is its run time.
    pub fn record(&self, service: &str, outcome: Outcome, elapsed: Duration) {
        let Some(handles) = self.services.get(service) else {
            return;
        };
        match outcome {
            Outcome::Handled => handles.handled.inc(),
            Outcome::Failed => handles.failures.inc(),
        };
        handles.duration.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every metric (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}

/// Answer scrapes on 0.0.0.0:`port` from a thread; an error if the port cannot be bound.
pub fn serve(port: u16, metrics: Arc<Metrics>) -> Result<JoinHandle<()>, String> {
    let server = tiny_http::Server::http(("0.0.0.0", port))
        .map_err(|e| format!("metrics: cannot listen on 0.0.0.0:{port}: {e}"))?;
    info!("metrics on http://0.0.0.0:{port}/metrics");
    let content_type = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
        .map_err(|_| "metrics: bad content type".to_owned())?;
    std::thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || {
            for request in server.incoming_requests() {
                let path = request.url().split('?').next().unwrap_or_default();
                let response = if path == "/metrics" {
                    tiny_http::Response::from_string(metrics.render())
                        .with_header(content_type.clone())
                } else {
                    tiny_http::Response::from_string("not found: try /metrics\n")
                        .with_status_code(404)
                };
                if let Err(e) = request.respond(response) {
                    warn!("metrics: answering a scrape failed: {e}");
                }
            }
        })
        .map_err(|e| format!("metrics: cannot start the thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_shared_names_labels_and_buckets() {
        let m = Metrics::new("rust-h-1-abcd", "0.1.0", &["echo".into(), "sha256".into()]);
        m.record("echo", Outcome::Handled, Duration::from_micros(300));
        m.record("echo", Outcome::Handled, Duration::from_millis(30));
        m.record("echo", Outcome::Failed, Duration::from_secs(20));
        m.record("nope", Outcome::Failed, Duration::ZERO);
        let text = m.render();

        // OpenMetrics names a counter's family without _total, its sample with it
        assert!(text.contains("# TYPE zmqflow_worker_tasks_handled counter\n"));
        assert!(text.contains("# TYPE zmqflow_worker_task_failures counter\n"));
        assert!(text.contains("# TYPE zmqflow_worker_handler_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE zmqflow_worker_info gauge\n"));
        assert!(text.ends_with("# EOF\n"));
        let s = |name: &str| sample(&text, name);
        assert_eq!(
            s(r#"zmqflow_worker_tasks_handled_total{service="echo"}"#),
            Some(2.0)
        );
        assert_eq!(
            s(r#"zmqflow_worker_task_failures_total{service="echo"}"#),
            Some(1.0)
        );
        assert_eq!(
            s(r#"zmqflow_worker_tasks_handled_total{service="sha256"}"#),
            Some(0.0)
        );
        assert_eq!(
            s(r#"zmqflow_worker_task_failures_total{service="sha256"}"#),
            Some(0.0)
        );
        assert_eq!(
            s(r#"zmqflow_worker_info{worker_id="rust-h-1-abcd",language="rust",version="0.1.0"}"#),
            Some(1.0)
        );
        // every handler run is timed; a service not offered makes no series
        assert!(!text.contains("nope"));
        assert_eq!(
            s(r#"zmqflow_worker_handler_duration_seconds_count{service="echo"}"#),
            Some(3.0)
        );
        assert_eq!(
            s(r#"zmqflow_worker_handler_duration_seconds_count{service="sha256"}"#),
            Some(0.0)
        );
        let les: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("zmqflow_worker_handler_duration_seconds_bucket{")
                    && l.contains(r#"service="echo""#)
            })
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            les,
            [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"
            ]
        );
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("zmqflow_worker_handler_duration_seconds_bucket{")
                        && l.contains(r#"service="echo""#)
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        assert_eq!(bucket("0.0005"), Some(1.0));
        assert_eq!(bucket("0.05"), Some(2.0));
        assert_eq!(bucket("10.0"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
    }
}
