//! Log lines on stderr: plain text, or the JSON line shared with the Python side.
//!
//! Contract: [`init`] installs env_logger at the given filter (`RUST_LOG`
//! wins when set) writing one line per record to stderr, in one of two
//! [`LogFormat`]s:
//! - `text`: `2026-11-30T08:15:02.123Z INFO  zmqflow-worker: message`;
//! - `json`: one JSON object per line with exactly the keys of the shared
//!   contract (notes, src/zmqflow/logs.py), in this order:
//!   `{"ts": "2026-11-30T08:15:02.123Z", "level": "INFO", "logger":
//!   "zmqflow.worker", "message": "...", "event": ..., "task_id": ...,
//!   "service": ..., "worker_id": ..., "language": "rust"}`. `ts` is UTC
//!   with milliseconds; levels are Python's names (WARN is `WARNING`);
//!   `event`, `task_id` and `service` appear when the log call passes them
//!   as key-values (`info!(event = "worker.ready"; "...")`); `worker_id` and
//!   `language` are known for the whole process and on every line. Other
//!   key-values are not written, so every line has the same small set of keys.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use log::kv::{Key, Value, VisitSource};
use serde_json::{Map, Value as Json};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The key-values a log call may pass that reach a JSON line.
pub const CONTEXT_KEYS: [&str; 3] = ["event", "task_id", "service"];

/// Install the logger for the whole process.
pub fn init(filter: &str, format: LogFormat, worker_id: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter));
    match format {
        LogFormat::Text => builder.format(|buf, record| {
            writeln!(
                buf,
                "{} {:5} zmqflow-worker: {}",
                utc_now(),
                record.level(),
                record.args()
            )
        }),
        LogFormat::Json => {
            let worker_id = worker_id.to_owned();
            builder.format(move |buf, record| {
                let mut context = Context::default();
                // A key-value that cannot be read is left out, never fatal.
                let _ = record.key_values().visit(&mut context);
                let line = json_line(
                    &utc_now(),
                    record.level(),
                    record.target(),
                    &record.args().to_string(),
                    &context.0,
                    &worker_id,
                );
                writeln!(buf, "{line}")
            })
        }
    };
    builder.init();
}

/// The context key-values of one record, in the order they were given.
#[derive(Default)]
struct Context(Vec<(&'static str, String)>);

impl<'kvs> VisitSource<'kvs> for Context {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        if let Some(known) = CONTEXT_KEYS.iter().find(|k| **k == key.as_str()) {
            self.0.push((known, value.to_string()));
        }
        Ok(())
    }
}

/// One JSON line (without the newline).
pub fn json_line(
    ts: &str,
    level: log::Level,
    target: &str,
    message: &str,
    context: &[(&str, String)],
    worker_id: &str,
) -> String {
    let mut line = Map::new();
    line.insert("ts".into(), ts.into());
    line.insert("level".into(), level_name(level).into());
    line.insert("logger".into(), logger_name(target).into());
    line.insert("message".into(), message.into());
    for key in CONTEXT_KEYS {
        if let Some((_, value)) = context.iter().find(|(k, _)| *k == key) {
            line.insert(key.into(), value.as_str().into());
        }
    }
    line.insert("worker_id".into(), worker_id.into());
    line.insert("language".into(), "rust".into());
    Json::Object(line).to_string()
}

/// Python's level names.
fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARNING",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// `zmqflow_worker::metrics` → `zmqflow.worker.metrics`; the binary and the
/// socket loop are `zmqflow.worker` (as the Python worker's logger); other
/// crates keep their module path.
fn logger_name(target: &str) -> String {
    match target.strip_prefix("zmqflow_worker") {
        Some("") | Some("::worker") => "zmqflow.worker".to_owned(),
        Some(rest) if rest.starts_with("::") => {
            format!("zmqflow.worker{}", rest.replace("::", "."))
        }
        _ => target.to_owned(),
    }
}

fn utc_now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default())
}

/// A Unix time as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (no date crate needed).
pub fn utc(now: Duration) -> String {
    let secs = now.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc(Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            utc(Duration::from_secs(1_798_761_599)),
            "2026-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn a_json_line_has_the_shared_keys_in_order() {
        let line = json_line(
            "2026-11-30T08:15:02.123Z",
            log::Level::Info,
            "zmqflow_worker::worker",
            "READY credit 2, 0 in flight",
            &[("event", "worker.ready".to_owned())],
            "rust-h-1-abcd",
        );
        assert_eq!(
            line,
            r#"{"ts":"2026-11-30T08:15:02.123Z","level":"INFO","logger":"zmqflow.worker","message":"READY credit 2, 0 in flight","event":"worker.ready","worker_id":"rust-h-1-abcd","language":"rust"}"#
        );
    }

    #[test]
    fn context_keys_come_in_the_contract_order_and_text_is_escaped() {
        let line = json_line(
            "t",
            log::Level::Warn,
            "zmqflow_worker::metrics",
            "quote \" and\nnewline ω",
            &[
                ("service", "sha256".to_owned()),
                ("task_id", "t-1".to_owned()),
                ("event", "task.failed".to_owned()),
            ],
            "w",
        );
        let parsed: Json = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = parsed
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "ts",
                "level",
                "logger",
                "message",
                "event",
                "task_id",
                "service",
                "worker_id",
                "language"
            ]
        );
        assert_eq!(parsed["level"], "WARNING");
        assert_eq!(parsed["logger"], "zmqflow.worker.metrics");
        assert_eq!(parsed["message"], "quote \" and\nnewline ω");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn only_context_keys_are_collected() {
        let mut context = Context::default();
        let kvs: [(&str, &str); 3] = [("event", "worker.lost"), ("other", "x"), ("task_id", "t")];
        log::kv::Source::visit(&kvs, &mut context).unwrap();
        assert_eq!(
            context.0,
            [
                ("event", "worker.lost".to_owned()),
                ("task_id", "t".to_owned())
            ]
        );
    }

    #[test]
    fn logger_names() {
        assert_eq!(logger_name("zmqflow_worker"), "zmqflow.worker");
        assert_eq!(logger_name("zmqflow_worker::worker"), "zmqflow.worker");
        assert_eq!(logger_name("zmqflow_worker::keys"), "zmqflow.worker.keys");
        assert_eq!(logger_name("tiny_http"), "tiny_http");
        assert_eq!(logger_name("zmqflow_workerx"), "zmqflow_workerx");
    }
}
