//! Command line and environment (ZMQFLOW_*) of `zmqflow-worker`.
//!
//! Contract: [`Cli::parse_validated`] returns either the `health` probe or a
//! complete [`Config`]; a missing endpoint, no service, an unknown service
//! name or a zero concurrency is a usage error (clap's message, exit 2);
//! so are half a CURVE pair (`--curve-secret` without `--curve-server` or
//! the other way round), a key file that cannot be read (the message names
//! the file) and keys given to a libzmq without CURVE. The key files are
//! read here, once. A flag wins over its environment variable; an empty
//! variable counts as not set.

use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::keys::CurveKeys;
use crate::logging::LogFormat;
use crate::services;

/// zmqflow worker (Rust): serves built-in services to a zmqflow forwarder.
#[derive(Debug, Parser)]
#[command(name = "zmqflow-worker", version, about)]
pub struct Cli {
    /// Forwarder backend endpoint, e.g. tcp://forwarder:5556.
    #[arg(long, env = "ZMQFLOW_CONNECT")]
    pub connect: Option<String>,

    /// Service to offer (repeatable; the variable takes a comma-separated list).
    #[arg(long = "service", env = "ZMQFLOW_SERVICE", value_delimiter = ',')]
    pub services: Vec<String>,

    /// Handler threads.
    #[arg(long, env = "ZMQFLOW_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// Tasks held at once, running plus waiting (default: 2 × concurrency).
    #[arg(long, env = "ZMQFLOW_CREDIT")]
    pub credit: Option<u64>,

    /// Seconds between heartbeats; the forwarder is dead after 3 silent intervals.
    #[arg(long, env = "ZMQFLOW_HEARTBEAT_INTERVAL", default_value_t = 1.0)]
    pub heartbeat_interval: f64,

    /// Silent intervals after which the forwarder counts as dead.
    #[arg(long, env = "ZMQFLOW_HEARTBEAT_LIVENESS", default_value_t = 3)]
    pub heartbeat_liveness: u32,

    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, env = "ZMQFLOW_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// File touched whenever the forwarder is heard from.
    #[arg(long, env = "ZMQFLOW_HEALTH_FILE")]
    pub health_file: Option<String>,

    /// Worker id (default rust-<hostname>-<pid>-<4 hex>).
    #[arg(long, env = "ZMQFLOW_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Log lines on stderr: text, or one JSON object per line.
    #[arg(long, env = "ZMQFLOW_LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Our secret key file (NAME.key_secret); CURVE with --curve-server.
    #[arg(long, env = "ZMQFLOW_CURVE_SECRET")]
    pub curve_secret: Option<String>,

    /// The forwarder's public key file (NAME.key).
    #[arg(long, env = "ZMQFLOW_CURVE_SERVER")]
    pub curve_server: Option<String>,

    /// Prometheus port (http://0.0.0.0:PORT/metrics); 0 turns it off.
    #[arg(long, env = "ZMQFLOW_METRICS_PORT", default_value_t = 0)]
    pub metrics_port: u16,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 when the health file was touched less than --max-age seconds ago.
    Health {
        /// The worker's health file.
        #[arg(long, env = "ZMQFLOW_HEALTH_FILE")]
        file: String,
        /// Largest acceptable age in seconds.
        #[arg(long, default_value_t = 5.0)]
        max_age: f64,
    },
}

/// Everything the worker loop needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub connect: String,
    pub services: Vec<String>,
    pub concurrency: usize,
    pub credit: u64,
    pub heartbeat_interval: Duration,
    pub liveness: u32,
    pub log_level: String,
    pub health_file: Option<String>,
    pub worker_id: String,
    pub host: String,
    pub log_format: LogFormat,
    /// CURVE keys, when the forwarder is a CURVE server.
    pub curve: Option<CurveKeys>,
    /// 0: no metrics.
    pub metrics_port: u16,
}

/// What the process was asked to do.
pub enum Mode {
    Health { file: String, max_age: f64 },
    Work(Box<Config>),
}

impl Cli {
    /// Parse argv and the environment; exits 2 with a usage error on bad input.
    pub fn parse_validated() -> Mode {
        Self::parse()
            .validate()
            .unwrap_or_else(|(kind, msg)| Cli::command().error(kind, msg).exit())
    }

    /// Validate parsed arguments into a [`Mode`].
    pub fn validate(self) -> Result<Mode, (ErrorKind, String)> {
        if let Some(Command::Health { file, max_age }) = self.command {
            return Ok(Mode::Health { file, max_age });
        }
        let connect = self.connect.filter(|c| !c.is_empty()).ok_or((
            ErrorKind::MissingRequiredArgument,
            "--connect (or ZMQFLOW_CONNECT) is required".to_owned(),
        ))?;
        let mut names: Vec<String> = Vec::new();
        for name in self
            .services
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            if services::lookup(name).is_none() {
                return Err((
                    ErrorKind::InvalidValue,
                    format!(
                        "unknown service '{name}'; this worker offers {}",
                        services::BUILTIN.join(", ")
                    ),
                ));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        if names.is_empty() {
            return Err((
                ErrorKind::MissingRequiredArgument,
                "at least one --service (or ZMQFLOW_SERVICE) is required".to_owned(),
            ));
        }
        if self.concurrency == 0 {
            return Err((
                ErrorKind::InvalidValue,
                "--concurrency must be at least 1".to_owned(),
            ));
        }
        if !(self.heartbeat_interval.is_finite() && self.heartbeat_interval > 0.0) {
            return Err((
                ErrorKind::InvalidValue,
                "--heartbeat-interval must be > 0".to_owned(),
            ));
        }
        if self.heartbeat_liveness == 0 {
            return Err((
                ErrorKind::InvalidValue,
                "--heartbeat-liveness must be at least 1".to_owned(),
            ));
        }
        if self.credit == Some(0) {
            return Err((
                ErrorKind::InvalidValue,
                "--credit must be at least 1".to_owned(),
            ));
        }
        let host = hostname();
        let worker_id = self.worker_id.unwrap_or_else(|| default_worker_id(&host));
        if worker_id.is_empty() || worker_id.len() > 128 {
            return Err((
                ErrorKind::InvalidValue,
                "--worker-id must be 1 to 128 bytes".to_owned(),
            ));
        }
        let curve = curve_keys(self.curve_secret, self.curve_server)?;
        Ok(Mode::Work(Box::new(Config {
            connect,
            services: names,
            concurrency: self.concurrency,
            credit: self.credit.unwrap_or(2 * self.concurrency as u64),
            heartbeat_interval: Duration::from_secs_f64(self.heartbeat_interval),
            liveness: self.heartbeat_liveness,
            log_level: log_filter(&self.log_level),
            health_file: self.health_file.filter(|f| !f.is_empty()),
            worker_id,
            host,
            log_format: self.log_format,
            curve,
            metrics_port: self.metrics_port,
        })))
    }
}

/// Both key files or neither; with both, a libzmq that speaks CURVE.
fn curve_keys(
    secret: Option<String>,
    server: Option<String>,
) -> Result<Option<CurveKeys>, (ErrorKind, String)> {
    let given = |f: Option<String>| f.filter(|f| !f.trim().is_empty());
    let (secret, server) = match (given(secret), given(server)) {
        (None, None) => return Ok(None),
        (Some(secret), Some(server)) => (secret, server),
        _ => {
            return Err((
                ErrorKind::ArgumentConflict,
                "--curve-secret and --curve-server go together (ZMQFLOW_CURVE_SECRET, \
                 ZMQFLOW_CURVE_SERVER): give both for CURVE, neither for plain"
                    .to_owned(),
            ))
        }
    };
    if zmq::has("curve") != Some(true) {
        let (major, minor, patch) = zmq::version();
        return Err((
            ErrorKind::InvalidValue,
            format!(
                "CURVE keys given, but this libzmq ({major}.{minor}.{patch}) has no CURVE \
                 support: link a libzmq built with libsodium (Debian's libzmq5)"
            ),
        ));
    }
    CurveKeys::load(&secret, &server)
        .map(Some)
        .map_err(|e| (ErrorKind::InvalidValue, e.0))
}

/// Python's level names (WARNING, CRITICAL, any case) as env_logger filters.
fn log_filter(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        "" => "info".to_owned(),
        other => other.to_owned(),
    }
}

/// The kernel's host name (a container's name on compose), or "localhost".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `rust-<hostname>-<pid>-<4 hex>`; the hex part tells restarts apart.
pub fn default_worker_id(host: &str) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let tag = hasher.finish() as u16;
    let id = format!("rust-{host}-{}-{tag:04x}", std::process::id());
    // Keep within the protocol's 128 bytes even for very long host names.
    id.chars()
        .rev()
        .take(128)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Mode, (ErrorKind, String)> {
        let mut argv = vec!["zmqflow-worker"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("clap parse").validate()
    }

    #[test]
    fn defaults() {
        let Ok(Mode::Work(cfg)) = parse(&["--connect", "tcp://x:1", "--service", "echo"]) else {
            panic!("expected a config");
        };
        assert_eq!(cfg.concurrency, 1);
        assert_eq!(cfg.credit, 2);
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(1));
        assert!(cfg.worker_id.starts_with("rust-"));
    }

    #[test]
    fn repeated_and_comma_separated_services() {
        let Ok(Mode::Work(cfg)) = parse(&[
            "--connect",
            "tcp://x:1",
            "--service",
            "echo,sha256",
            "--service",
            "rollup",
            "--service",
            "echo",
            "--concurrency",
            "3",
        ]) else {
            panic!("expected a config");
        };
        assert_eq!(cfg.services, ["echo", "sha256", "rollup"]);
        assert_eq!(cfg.credit, 6);
    }

    #[test]
    fn unknown_service_is_a_usage_error() {
        let Err((kind, msg)) = parse(&["--connect", "tcp://x:1", "--service", "nope"]) else {
            panic!("expected an error");
        };
        assert_eq!(kind, ErrorKind::InvalidValue);
        assert!(msg.contains("unknown service 'nope'"));
    }

    #[test]
    fn health_needs_no_connect() {
        assert!(matches!(
            parse(&["health", "--file", "/tmp/x", "--max-age", "2"]),
            Ok(Mode::Health { max_age, .. }) if max_age == 2.0
        ));
    }

    #[test]
    fn new_options_default_to_plain_text_and_no_metrics() {
        let Ok(Mode::Work(cfg)) = parse(&["--connect", "tcp://x:1", "--service", "echo"]) else {
            panic!("expected a config");
        };
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.metrics_port, 0);
        assert!(cfg.curve.is_none());
        let Ok(Mode::Work(cfg)) = parse(&[
            "--connect",
            "tcp://x:1",
            "--service",
            "echo",
            "--log-format",
            "json",
            "--metrics-port",
            "9100",
        ]) else {
            panic!("expected a config");
        };
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.metrics_port, 9100);
    }

    #[test]
    fn half_a_curve_pair_is_a_usage_error() {
        let Err((kind, msg)) = parse(&[
            "--connect",
            "tcp://x:1",
            "--service",
            "echo",
            "--curve-secret",
            "/tmp/w.key_secret",
        ]) else {
            panic!("expected an error");
        };
        assert_eq!(kind, ErrorKind::ArgumentConflict);
        assert!(msg.contains("go together"));
    }

    #[test]
    fn a_missing_key_file_is_a_usage_error_naming_it() {
        let Err((kind, msg)) = parse(&[
            "--connect",
            "tcp://x:1",
            "--service",
            "echo",
            "--curve-secret",
            "/nonexistent/w.key_secret",
            "--curve-server",
            "/nonexistent/forwarder.key",
        ]) else {
            panic!("expected an error");
        };
        assert_eq!(kind, ErrorKind::InvalidValue);
        assert_eq!(msg, "key file /nonexistent/w.key_secret: missing");
    }

    #[test]
    fn worker_id_shape() {
        let id = default_worker_id("host");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts[0], "rust");
        assert_eq!(parts[1], "host");
        assert_eq!(parts[3].len(), 4);
    }
}
