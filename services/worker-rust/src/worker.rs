//! The worker side of ZFP/2 (docs/protocol.md, "Worker life").
//!
//! Contract:
//! - one DEALER socket to the forwarder's backend; READY on every new socket
//!   and after every DISCONNECT from the forwarder, listing the ids still held;
//! - at most `credit` tasks held (running plus waiting); each task of a TASK
//!   runs on a pool of `concurrency` handler threads and is answered exactly
//!   once, in a RESULT or a FAILED (handler errors and panics become FAILED);
//! - a TASK is decoded in one pass (`protocol::decode_tasks`); a task that
//!   does not decode is answered FAILED `malformed task: …` when its id is
//!   readable (else logged and dropped) and the other tasks run; a TASK whose
//!   body is not one non-empty array is logged and dropped;
//! - answers are batched per loop turn: what finished since the last send
//!   goes out as one RESULT and one FAILED message, each body encoded once
//!   (split at `protocol::MAX_BATCH` items and 64 MiB);
//! - the main thread only moves messages, so it stays responsive while
//!   handlers run: finished tasks come back over an inproc PUSH/PULL pair and
//!   wake `zmq_poll` at once; SIGTERM/SIGINT arrive through a self-pipe that
//!   is polled too;
//! - HEARTBEAT every interval; after `liveness` silent intervals the socket
//!   is closed and a new one opened after a backoff (0.1 s doubling to 5 s,
//!   reset once the forwarder is heard from). Answers produced while the
//!   link is down (and those sent during the silent window) are sent again
//!   after the next READY: the forwarder drops late duplicates;
//! - with CURVE keys the socket is a CURVE client of the forwarder's key.
//!   Until the forwarder first speaks on a socket, its monitor is watched
//!   (handshake.rs): a refused handshake (libzmq never retries it) is logged
//!   at warn naming our key and the endpoint, and takes the silent path
//!   above at once: socket closed, a new one after the backoff, so that a
//!   worker allowed later gets in without a restart;
//! - with metrics, each handler run is counted per service (metrics.rs);
//! - the start, READY, the first word from the forwarder on a socket, a lost
//!   link and the drained DISCONNECT are logged at info with `event`
//!   worker.start / worker.ready / worker.connected / worker.lost /
//!   worker.gone, a refusal at warn with worker.refused, a failed task at
//!   info with task.failed (task_id, service);
//! - drain on SIGTERM: READY with credit 0, answer everything held,
//!   DISCONNECT {reason: "drained"}, return Ok (exit 0). A draining worker
//!   that cannot reach the forwarder (nothing heard for two intervals, or no
//!   socket) gives up 4 s after SIGTERM, holding tasks or not, and returns
//!   Ok at once: no linger, handler threads left to die with the process
//!   (the forwarder requeues what it held). With nothing held and no socket
//!   there is nothing to hand back: it returns at once.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use indexmap::IndexSet;
use log::{debug, error, info, warn};

use crate::config::Config;
use crate::handshake::{Refusal, Watch};
use crate::metrics::{Metrics, Outcome};
use crate::protocol::{
    self, cmd, Dispatch, Done, Failure, Frames, Headers, Item, Message, Ready, Side,
};
use crate::services;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a draining worker keeps trying to reach a dead forwarder before
/// it gives up (the forwarder requeues what it held): 4 s, so that it is gone
/// within 5 s of SIGTERM, as docs/protocol.md promises and the Python worker does.
const DRAIN_GIVE_UP: Duration = Duration::from_secs(4);
/// The health file is rewritten at most this often.
const HEALTH_TOUCH_EVERY: Duration = Duration::from_millis(250);
/// ZMQ_MAXMSGSIZE of the forwarder link (docs/protocol.md, Limits).
const MAX_MESSAGE_BYTES: i64 = protocol::MAX_MESSAGE_BYTES as i64;
/// Internal answer frames from a handler thread (inproc, not the wire):
/// [id, OUTPUT|ERROR, bytes].
const OUTPUT: u8 = 0;
const ERROR: u8 = 1;
/// How long closing the socket waits to flush the final messages.
const FINAL_LINGER_MS: i32 = 2000;

static POOL_SEQ: AtomicUsize = AtomicUsize::new(0);

/// One task for the handler pool.
struct Job {
    id: String,
    service: String,
    headers: Headers,
    payload: Vec<u8>,
}

/// Run a handler (counted when `metrics`); the internal answer frames for the loop.
fn execute(job: Job, metrics: Option<&Metrics>) -> Frames {
    let started = metrics.map(|_| Instant::now());
    let outcome = match services::lookup(&job.service) {
        Some(handler) => catch_unwind(AssertUnwindSafe(|| handler(&job.payload, &job.headers)))
            .unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".to_owned());
                Err(format!("panic: {text}"))
            }),
        // Same text as the Python worker.
        None => Err(format!("service '{}' not served here", job.service)),
    };
    if let (Some(metrics), Some(started)) = (metrics, started) {
        let counted = match &outcome {
            Ok(_) => Outcome::Handled,
            Err(_) => Outcome::Failed,
        };
        // (a service not served here ran no handler: `record` skips it)
        metrics.record(&job.service, counted, started.elapsed());
    }
    match outcome {
        Ok(payload) => vec![job.id.into_bytes(), vec![OUTPUT], payload],
        Err(text) => {
            info!(
                event = "task.failed", task_id = job.id.as_str(), service = job.service.as_str();
                "task {} failed: {text}", job.id
            );
            vec![job.id.into_bytes(), vec![ERROR], text.into_bytes()]
        }
    }
}

/// Answers kept by the loop, RESULT items and FAILED items apart.
#[derive(Default)]
struct Answers {
    done: Vec<Done>,
    failed: Vec<Failure>,
}

impl Answers {
    fn is_empty(&self) -> bool {
        self.done.is_empty() && self.failed.is_empty()
    }

    fn len(&self) -> usize {
        self.done.len() + self.failed.len()
    }

    fn ids(&self) -> impl Iterator<Item = &String> {
        self.done
            .iter()
            .map(|d| &d.id)
            .chain(self.failed.iter().map(|f| &f.id))
    }

    /// Put `earlier` in front of what is held.
    fn prepend(&mut self, mut earlier: Answers) {
        earlier.done.append(&mut self.done);
        earlier.failed.append(&mut self.failed);
        *self = earlier;
    }
}

/// `concurrency` threads taking jobs from a channel and pushing answers to
/// the loop's inproc PULL socket.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(
        ctx: &zmq::Context,
        endpoint: &str,
        size: usize,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Pool, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(size);
        for n in 0..size {
            let push = ctx
                .socket(zmq::PUSH)
                .map_err(|e| format!("inproc socket: {e}"))?;
            push.set_sndhwm(0).map_err(|e| e.to_string())?;
            push.connect(endpoint)
                .map_err(|e| format!("inproc connect: {e}"))?;
            let rx = Arc::clone(&rx);
            let metrics = metrics.clone();
            let thread = std::thread::Builder::new()
                .name(format!("handler-{n}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if let Err(e) = push.send_multipart(execute(job, metrics.as_deref()), 0) {
                        error!("handler thread cannot reach the loop: {e}");
                        return;
                    }
                })
                .map_err(|e| format!("spawn handler thread: {e}"))?;
            threads.push(thread);
        }
        Ok(Pool {
            jobs: Some(tx),
            threads,
        })
    }

    fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            if tx.send(job).is_err() {
                error!("handler pool is gone");
            }
        }
    }

    fn stop(mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// Stop taking jobs, but do not wait for the running ones: they die with
    /// the process (a drain that gave up must not wait out a long handler).
    fn abandon(mut self) {
        self.jobs.take();
        self.threads.clear();
    }
}

/// How a drain ended.
#[derive(Debug, PartialEq)]
enum Drained {
    /// Everything answered and DISCONNECT sent.
    Left,
    /// The forwarder was unreachable: what was held is left behind.
    GaveUp,
}

/// Whether the forwarder has spoken on a socket yet.
enum Handshake {
    /// Not yet: the socket monitor is watched for a refused handshake.
    Watching(Watch),
    /// It has: the handshake went through, the watch is gone.
    Heard,
}

/// A live socket to the forwarder and its timers.
struct Link {
    socket: zmq::Socket,
    /// When the forwarder last spoke on this socket (at first: when it opened).
    last_heard: Instant,
    handshake: Handshake,
    next_heartbeat: Instant,
}

/// Why a link to the forwarder is given up (and a new socket opened later).
enum Lost {
    /// Nothing heard for `liveness` intervals.
    Silent(Duration),
    /// The forwarder refused our handshake: libzmq will not try this socket again.
    Refused(Refusal),
}

/// What woke the loop up.
#[derive(Default)]
struct Woken {
    signalled: bool,
    results: bool,
    socket: bool,
    monitor: bool,
}

enum Conn {
    Up(Link),
    Down { retry_at: Instant },
}

/// The worker: its configuration, link and the tasks it holds.
pub struct Worker {
    cfg: Config,
    ctx: zmq::Context,
    conn: Conn,
    /// Ids received and not yet answered by a handler, in arrival order.
    held: IndexSet<String>,
    /// Answers not sent yet: finished this loop turn, or held while the
    /// link was down. Sent at the end of each turn.
    outbox: Answers,
    /// Answers sent since the forwarder was last heard from.
    unconfirmed: Answers,
    backoff: Duration,
    draining_since: Option<Instant>,
    health_touched: Option<Instant>,
    /// A DISCONNECT arrived: READY goes out once the burst is read (a
    /// restarted forwarder answers every queued message with DISCONNECT).
    ready_wanted: bool,
    metrics: Option<Arc<Metrics>>,
}

impl Worker {
    /// `metrics`: where handler runs are counted (None: not counted).
    pub fn new(cfg: Config, ctx: zmq::Context, metrics: Option<Arc<Metrics>>) -> Worker {
        Worker {
            cfg,
            ctx,
            conn: Conn::Down {
                retry_at: Instant::now(),
            },
            held: IndexSet::new(),
            outbox: Answers::default(),
            unconfirmed: Answers::default(),
            backoff: BACKOFF_MIN,
            draining_since: None,
            health_touched: None,
            ready_wanted: false,
            metrics,
        }
    }

    /// Serve until drained. `signals` becomes readable on SIGTERM/SIGINT.
    pub fn run(mut self, mut signals: UnixStream) -> Result<(), String> {
        let endpoint = format!(
            "inproc://zmqflow-results-{}",
            POOL_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let results = self.ctx.socket(zmq::PULL).map_err(|e| e.to_string())?;
        results.set_rcvhwm(0).map_err(|e| e.to_string())?;
        results
            .bind(&endpoint)
            .map_err(|e| format!("bind {endpoint}: {e}"))?;
        let pool = Pool::start(
            &self.ctx,
            &endpoint,
            self.cfg.concurrency,
            self.metrics.clone(),
        )?;
        signals.set_nonblocking(true).map_err(|e| e.to_string())?;
        info!(
            event = "worker.start";
            "worker {} serving {} (concurrency {}, credit {}) via {}{}",
            self.cfg.worker_id,
            self.cfg.services.join(","),
            self.cfg.concurrency,
            self.cfg.credit,
            self.cfg.connect,
            match &self.cfg.curve {
                Some(keys) => format!(" with CURVE, our key {}", keys.public.z85),
                None => " (plain, no CURVE keys)".to_owned(),
            }
        );

        let outcome = loop {
            self.timers();
            if let Some(drained) = self.drain_finished() {
                break Ok(drained);
            }
            let woken = match self.wait(&results, &signals) {
                Ok(woken) => woken,
                Err(e) => break Err(format!("poll: {e}")),
            };
            if woken.signalled {
                let mut sink = [0u8; 64];
                while matches!(signals.read(&mut sink), Ok(n) if n > 0) {}
                self.start_drain();
            }
            if woken.results {
                while let Ok(frames) = results.recv_multipart(zmq::DONTWAIT) {
                    self.answer(frames);
                }
            }
            if woken.socket {
                while let Some(frames) = self.recv() {
                    self.handle(frames, &pool);
                }
                if std::mem::take(&mut self.ready_wanted) {
                    self.send_ready();
                }
            }
            if woken.monitor {
                if let Some(refusal) = self.refusal() {
                    self.lose(Lost::Refused(refusal));
                }
            }
            self.flush();
        };
        let gave_up = outcome == Ok(Drained::GaveUp);
        if let Conn::Up(link) = &self.conn {
            // Nobody to send to after giving up: what is queued would only hold up the exit.
            let _ = link
                .socket
                .set_linger(if gave_up { 0 } else { FINAL_LINGER_MS });
        }
        self.conn = Conn::Down {
            retry_at: Instant::now(),
        };
        if gave_up {
            pool.abandon();
        } else {
            pool.stop();
        }
        outcome.map(|_| ())
    }

    /// Block in zmq_poll until a socket, the signal pipe or a timer is due.
    fn wait(&self, results: &zmq::Socket, signals: &UnixStream) -> Result<Woken, zmq::Error> {
        let now = Instant::now();
        let mut deadline = match &self.conn {
            Conn::Up(link) => link.next_heartbeat.min(link.last_heard + self.dead_after()),
            Conn::Down { retry_at } => *retry_at,
        };
        if let Some(since) = self.draining_since {
            // A drain must not oversleep the moment it may give up.
            let give_up = since + DRAIN_GIVE_UP;
            if now < give_up {
                deadline = deadline.min(give_up);
            }
        }
        let timeout = deadline.saturating_duration_since(now);
        let timeout_ms = timeout.as_micros().div_ceil(1000) as i64;
        let mut items = vec![
            zmq::PollItem::from_fd(signals.as_raw_fd(), zmq::POLLIN),
            results.as_poll_item(zmq::POLLIN),
        ];
        if let Conn::Up(link) = &self.conn {
            items.push(link.socket.as_poll_item(zmq::POLLIN));
            if let Handshake::Watching(watch) = &link.handshake {
                items.push(watch.socket.as_poll_item(zmq::POLLIN));
            }
        }
        match zmq::poll(&mut items, timeout_ms) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(Woken::default()),
            Err(e) => return Err(e),
        }
        let readable = |n: usize| items.get(n).is_some_and(|i| i.is_readable());
        Ok(Woken {
            signalled: readable(0),
            results: readable(1),
            socket: readable(2),
            monitor: readable(3),
        })
    }

    /// A refused handshake waiting on the current socket's monitor.
    fn refusal(&self) -> Option<Refusal> {
        match &self.conn {
            Conn::Up(Link {
                handshake: Handshake::Watching(watch),
                ..
            }) => watch.read(),
            _ => None,
        }
    }

    /// Give the link up: close the socket, open a new one after the backoff.
    /// What was sent on the old socket may be lost: it is sent again.
    fn lose(&mut self, why: Lost) {
        let Conn::Up(link) = &self.conn else { return };
        let again = self.backoff.as_secs_f64();
        match why {
            // INFO like every worker arrival, departure and loss (shared contract).
            Lost::Silent(silent) => info!(
                event = "worker.lost";
                "forwarder silent for {:.1}s; new socket in {again:.1}s",
                silent.as_secs_f64()
            ),
            Lost::Refused(refusal) => warn!(
                event = "worker.refused";
                "{}; new socket in {again:.1}s", refusal.message()
            ),
        }
        let _ = link.socket.set_linger(0);
        self.conn = Conn::Down {
            retry_at: Instant::now() + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        let sent = std::mem::take(&mut self.unconfirmed);
        self.outbox.prepend(sent);
    }

    fn dead_after(&self) -> Duration {
        self.cfg.heartbeat_interval * self.cfg.liveness
    }

    /// Heartbeats, liveness and reconnects.
    fn timers(&mut self) {
        let now = Instant::now();
        let dead_after = self.dead_after();
        match &mut self.conn {
            Conn::Up(link) => {
                let silent = now.duration_since(link.last_heard);
                if silent >= dead_after {
                    self.lose(Lost::Silent(silent));
                } else if now >= link.next_heartbeat {
                    send(&link.socket, protocol::encode(&Message::Heartbeat));
                    link.next_heartbeat = now + self.cfg.heartbeat_interval;
                }
            }
            Conn::Down { retry_at } => {
                if now >= *retry_at {
                    if let Err(e) = self.open() {
                        error!("cannot open a socket to {}: {e}", self.cfg.connect);
                        self.conn = Conn::Down {
                            retry_at: now + self.backoff,
                        };
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// A new DEALER (a CURVE client with keys), watched, connected, READY
    /// sent, pending answers flushed.
    fn open(&mut self) -> Result<(), zmq::Error> {
        let socket = self.ctx.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(0)?;
        socket.set_rcvhwm(0)?;
        socket.set_maxmsgsize(MAX_MESSAGE_BYTES)?;
        if let Some(keys) = &self.cfg.curve {
            socket.set_curve_serverkey(&keys.server.bytes)?;
            socket.set_curve_publickey(&keys.public.bytes)?;
            socket.set_curve_secretkey(&keys.secret.bytes)?;
        }
        let key = self.cfg.curve.as_ref().map(|k| k.public.z85.as_str());
        let watch = Watch::new(&self.ctx, &socket, key)?;
        socket.connect(&self.cfg.connect)?;
        let now = Instant::now();
        self.conn = Conn::Up(Link {
            socket,
            last_heard: now,
            handshake: Handshake::Watching(watch),
            next_heartbeat: now + self.cfg.heartbeat_interval,
        });
        info!("connected to {}", self.cfg.connect);
        self.send_ready();
        if !self.outbox.is_empty() {
            info!(
                "sending {} answers held while the forwarder was away",
                self.outbox.len()
            );
        }
        self.flush();
        Ok(())
    }

    fn send_ready(&mut self) {
        let Conn::Up(link) = &self.conn else { return };
        let mut inflight: Vec<String> = self.held.iter().cloned().collect();
        inflight.extend(self.outbox.ids().cloned());
        let credit = if self.draining_since.is_some() {
            0
        } else {
            self.cfg.credit
        };
        let ready = Ready {
            worker: self.cfg.worker_id.clone(),
            language: "rust".to_owned(),
            services: self.cfg.services.clone(),
            credit,
            inflight,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: u64::from(std::process::id()),
            host: self.cfg.host.clone(),
        };
        if credit > 0 {
            info!(
                event = "worker.ready";
                "READY credit {credit}, {} in flight", ready.inflight.len()
            );
        } else {
            info!(
                event = "worker.draining";
                "READY credit 0, {} in flight", ready.inflight.len()
            );
        }
        send(&link.socket, protocol::encode(&Message::Ready(ready)));
    }

    /// Send what the outbox holds, batched: one RESULT and one FAILED
    /// message (more only past the size limits). What cannot be sent stays
    /// for the next turn or the next socket.
    fn flush(&mut self) {
        let Conn::Up(link) = &self.conn else { return };
        if self.outbox.is_empty() {
            return;
        }
        let done = send_batches(&link.socket, &self.outbox.done, protocol::results_frames);
        let failed = send_batches(&link.socket, &self.outbox.failed, protocol::failures_frames);
        self.unconfirmed.done.extend(self.outbox.done.drain(..done));
        self.unconfirmed
            .failed
            .extend(self.outbox.failed.drain(..failed));
    }

    /// A handler finished: frames are [id, OUTPUT|ERROR, payload or text].
    fn answer(&mut self, frames: Frames) {
        let Ok([id, kind, data]) = <[Vec<u8>; 3]>::try_from(frames) else {
            error!("bad internal answer");
            return;
        };
        let id = into_text(id);
        self.held.shift_remove(&id);
        if kind == [OUTPUT] {
            self.outbox.done.push(Done { id, payload: data });
        } else {
            let error = into_text(data);
            self.outbox.failed.push(Failure { id, error });
        }
    }

    fn recv(&self) -> Option<Frames> {
        let Conn::Up(link) = &self.conn else {
            return None;
        };
        link.socket.recv_multipart(zmq::DONTWAIT).ok()
    }

    fn heard(&mut self) {
        let now = Instant::now();
        if let Conn::Up(link) = &mut self.conn {
            link.last_heard = now;
            if let Handshake::Watching(_) = link.handshake {
                // In: stop watching the monitor (the hot path polls one socket again).
                link.handshake = Handshake::Heard;
                info!(
                    event = "worker.connected";
                    "forwarder at {} answered", self.cfg.connect
                );
            }
        }
        self.backoff = BACKOFF_MIN;
        self.unconfirmed = Answers::default();
        if let Some(path) = &self.cfg.health_file {
            if self
                .health_touched
                .is_none_or(|t| now.duration_since(t) >= HEALTH_TOUCH_EVERY)
            {
                self.health_touched = Some(now);
                if let Err(e) = touch(path) {
                    warn!("cannot touch health file {path}: {e}");
                }
            }
        }
    }

    /// One message from the forwarder.
    fn handle(&mut self, frames: Frames, pool: &Pool) {
        self.heard();
        if matches!(protocol::peek(&frames), Ok((Side::Worker, cmd::TASK))) {
            match protocol::decode_tasks(&frames) {
                Ok(items) => {
                    for item in items {
                        match item {
                            Ok(task) => self.start(task, pool),
                            Err(bad) => self.refuse_task(bad),
                        }
                    }
                }
                Err(e) => warn!("ignoring a TASK from the forwarder: {e}"),
            }
            return;
        }
        match protocol::decode(&frames) {
            Ok(Message::Heartbeat) => {}
            Ok(Message::Disconnect { reason }) => {
                if !self.ready_wanted {
                    info!("forwarder sent DISCONNECT ({reason}); announcing again");
                }
                self.ready_wanted = true;
            }
            Ok(other) => warn!("ignoring unexpected message from the forwarder: {other:?}"),
            Err(e) => warn!("ignoring a message from the forwarder: {e}"),
        }
    }

    /// One task of a TASK: hand it to the pool.
    fn start(&mut self, task: Dispatch, pool: &Pool) {
        if self.held.contains(&task.id) {
            warn!(
                "task {} dispatched again while still held; answering once",
                task.id
            );
            return;
        }
        if self.held.len() as u64 >= self.cfg.credit {
            warn!(
                "forwarder sent task {} beyond credit {}",
                task.id, self.cfg.credit
            );
        }
        debug!(
            event = "task.received", task_id = task.id.as_str(), service = task.service.as_str();
            "task {} ({}, attempt {})", task.id, task.service, task.attempt
        );
        self.held.insert(task.id.clone());
        pool.submit(Job {
            id: task.id,
            service: task.service,
            headers: task.headers,
            payload: task.payload,
        });
    }

    /// A task that did not decode: FAILED when its id is known, else dropped.
    fn refuse_task(&mut self, bad: protocol::BadTask) {
        match bad.id {
            Some(id) => {
                warn!(
                    event = "task.malformed", task_id = id.as_str();
                    "malformed task {id}: {}", bad.error
                );
                let error = format!("malformed task: {}", bad.error);
                self.outbox.failed.push(Failure { id, error });
            }
            None => warn!("ignoring a task without a readable id: {}", bad.error),
        }
    }

    fn start_drain(&mut self) {
        if self.draining_since.is_some() {
            info!("already draining ({} tasks held)", self.held.len());
            return;
        }
        info!("draining: {} tasks held", self.held.len());
        self.draining_since = Some(Instant::now());
        self.send_ready();
    }

    /// `Some(how)` once a drain is over.
    fn drain_finished(&mut self) -> Option<Drained> {
        let since = self.draining_since?;
        let nothing_held = self.held.is_empty() && self.outbox.is_empty();
        let reachable = match &self.conn {
            // Wait to hear the forwarder after our credit-0 READY: a TASK it sent
            // before reading that READY arrives first (ZeroMQ keeps order per
            // connection), so nothing dispatched to us is left behind.
            Conn::Up(link) if nothing_held && link.last_heard > since => {
                let bye = Message::Disconnect {
                    reason: "drained".to_owned(),
                };
                send(&link.socket, protocol::encode(&bye));
                info!(event = "worker.gone"; "drained; DISCONNECT sent");
                return Some(Drained::Left);
            }
            // A forwarder that answered on this socket within two intervals is there.
            Conn::Up(link) => {
                matches!(link.handshake, Handshake::Heard)
                    && link.last_heard.elapsed() <= self.cfg.heartbeat_interval * 2
            }
            // No socket, nothing to hand back: no forwarder is needed to leave.
            Conn::Down { .. } if nothing_held => {
                info!(event = "worker.gone"; "drained with no link to the forwarder and nothing held");
                return Some(Drained::Left);
            }
            Conn::Down { .. } => false,
        };
        if !reachable && since.elapsed() >= DRAIN_GIVE_UP {
            warn!(
                event = "worker.gone";
                "drain: forwarder unreachable, leaving {} tasks and {} answers behind \
                 (the forwarder requeues them)",
                self.held.len(),
                self.outbox.len()
            );
            return Some(Drained::GaveUp);
        }
        None
    }
}

/// An id or error text back from the handler threads, which send `String`
/// bytes: reused as they are, no copy (lossy only for bytes that are not
/// UTF-8, which they never send).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Send `items` as batched messages built by `encode`; how many items went
/// out (a failed send stops there: the rest is kept for later).
fn send_batches<T: Item>(socket: &zmq::Socket, items: &[T], encode: fn(&[T]) -> Frames) -> usize {
    let mut sent = 0;
    for run in protocol::batches(items, protocol::MAX_BATCH, protocol::MAX_MESSAGE_BYTES) {
        if !send(socket, encode(run)) {
            break;
        }
        sent += run.len();
    }
    sent
}

/// Send without blocking (the socket's send queue is unbounded); false on error.
fn send(socket: &zmq::Socket, frames: Frames) -> bool {
    match socket.send_multipart(frames, zmq::DONTWAIT) {
        Ok(()) => true,
        Err(e) => {
            warn!("send failed: {e}");
            false
        }
    }
}

/// Create the file if needed and set its modification time to now.
pub fn touch(path: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.set_modified(SystemTime::now())
}

/// `health` mode: is the file younger than `max_age` seconds?
pub fn healthy(path: &str, max_age: f64) -> Result<f64, String> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{path}: {e}"))?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
        .as_secs_f64();
    if age <= max_age {
        Ok(age)
    } else {
        Err(format!("{path} is {age:.1}s old (max {max_age}s)"))
    }
}
