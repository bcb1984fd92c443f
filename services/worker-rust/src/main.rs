//! `zmqflow-worker`: a zmqflow worker in Rust (docs/protocol.md, ZFP/2).
//!
//! Contract: `zmqflow-worker --connect EP --service NAME…` serves until
//! SIGTERM/SIGINT, then drains and exits 0; a usage error exits 2; a fatal
//! runtime error exits 1 (a metrics port that cannot be bound too).
//! `zmqflow-worker health --file PATH --max-age S`
//! exits 0 when PATH was touched less than S seconds ago, else 1.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;

use log::{error, info, warn};

use zmqflow_worker::config::{Cli, Mode};
use zmqflow_worker::metrics::{self, Metrics};
use zmqflow_worker::{logging, worker};

/// Say clearly whether this libzmq can speak CurveZMQ.
fn report_curve() {
    let (major, minor, patch) = zmq::version();
    match zmq::has("curve") {
        Some(true) => info!("libzmq {major}.{minor}.{patch}: CURVE available"),
        _ => warn!(
            "!!! libzmq {major}.{minor}.{patch} has NO CURVE support: this worker cannot join \
             a CurveZMQ-secured forwarder (link Debian's libzmq5, see README) !!!"
        ),
    }
}

/// SIGTERM and SIGINT write to a socket pair whose read end the loop polls.
fn signal_pipe() -> std::io::Result<UnixStream> {
    let (read_end, write_end) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, write_end.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write_end)?;
    Ok(read_end)
}

fn main() -> ExitCode {
    let mode = Cli::parse_validated();
    let cfg = match mode {
        Mode::Health { file, max_age } => {
            return match worker::healthy(&file, max_age) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Mode::Work(cfg) => *cfg,
    };
    logging::init(&cfg.log_level, cfg.log_format, &cfg.worker_id);
    report_curve();
    let metrics = match cfg.metrics_port {
        0 => None,
        port => {
            let version = env!("CARGO_PKG_VERSION");
            let m = Arc::new(Metrics::new(&cfg.worker_id, version, &cfg.services));
            if let Err(e) = metrics::serve(port, Arc::clone(&m)) {
                error!("{e}");
                return ExitCode::FAILURE;
            }
            Some(m)
        }
    };
    let signals = match signal_pipe() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = zmq::Context::new();
    let result = worker::Worker::new(cfg, ctx.clone(), metrics).run(signals);
    drop(ctx);
    match result {
        Ok(()) => {
            info!("exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
