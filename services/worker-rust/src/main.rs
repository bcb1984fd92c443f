//! `zmqflow-worker`: a zmqflow worker in Rust (docs/protocol.md, ZFP/2).
//!
//! Contract: `zmqflow-worker --connect EP --service NAME…` serves until
//! SIGTERM/SIGINT, then drains and exits 0; a usage error exits 2; a fatal
//! runtime error exits 1. `zmqflow-worker health --file PATH --max-age S`
//! exits 0 when PATH was touched less than S seconds ago, else 1.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use log::{error, info, warn};

use zmqflow_worker::config::{Cli, Mode};
use zmqflow_worker::worker;

fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default())
}

/// A Unix time as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (no date crate needed).
fn utc(now: std::time::Duration) -> String {
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

fn init_logging(level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:5} zmqflow-worker: {}",
                utc_now(),
                record.level(),
                record.args()
            )
        })
        .init();
}

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
        Mode::Work(cfg) => cfg,
    };
    init_logging(&cfg.log_level);
    report_curve();
    let signals = match signal_pipe() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = zmq::Context::new();
    let result = worker::Worker::new(cfg, ctx.clone()).run(signals);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn utc_timestamps() {
        assert_eq!(super::utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::utc(Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            super::utc(Duration::from_secs(1_798_761_599)),
            "2026-12-31T23:59:59.000Z"
        );
    }
}
