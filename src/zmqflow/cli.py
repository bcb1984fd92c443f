"""The ``zmqflow`` command line (typer): the commands README.md's "Using it" shows.

Contract: the options of ``forwarder``, ``worker``, ``submit``, ``status`` and
``dead-letters`` are generated from the settings models (settings.py), one
``--field-name`` per field, so that each setting is written once; every one
also reads its ZMQFLOW_* variable through pydantic-settings. A bad value is
reported plainly with exit code 2.
"""

from __future__ import annotations

import inspect
import json
import signal
import sys
import time
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import typer
import zmq
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zmqflow import events
from zmqflow.settings import (
    ClientSettings,
    CurvePeerSettings,
    ForwarderSettings,
    UnusableSetting,
    WorkerSettings,
    key_file_setting,
)

if TYPE_CHECKING:
    from zmqflow.client import Client
    from zmqflow.security.peer import CurveKeys

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="zmqflow: a loss-free ZeroMQ task and event fabric.",
)
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep and logs


def _option_type(annotation: Any) -> tuple[Any, str]:
    """The type typer parses a settings field as, and a note for its help."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is list:
        return list[str], "repeatable"
    if get_origin(annotation) is Literal:
        return str, "one of " + ", ".join(map(str, get_args(annotation)))
    return annotation, ""


def settings_options(
    model: type[BaseSettings],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per field of ``model``; it gets ``settings``.

    The command's own parameters stay; ``settings`` is replaced by the
    generated options, and the command receives the model built from them
    (options given over ZMQFLOW_* variables over defaults; exit 2 if bad).
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())
        fields = model.model_fields
        generated = []
        for name, field in fields.items():
            kind, note = _option_type(field.annotation)
            env = f"ZMQFLOW_{name.upper()}"
            help_text = "; ".join(filter(None, [field.description, note, f"env {env}"]))
            generated.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[
                        kind | None,
                        typer.Option(
                            help=help_text, metavar="TEXT" if note == "repeatable" else None
                        ),
                    ],
                )
            )
        params = [p for p in own if p.name != "settings"] + generated

        def run(**options: Any) -> None:
            given = {k: options.pop(k) for k in list(options) if k in fields}
            command(settings=_settings(model, **given), **options)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__name__, run.__doc__ = command.__name__, command.__doc__
        return run

    return decorate


def _settings(cls: type[Any], **options: Any) -> Any:
    """Settings from options given (not None) over ZMQFLOW_* variables over defaults."""
    try:
        return cls(**{k: v for k, v in options.items() if v is not None and v != []})
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            err.print(f"[red]bad setting[/] {field} (ZMQFLOW_{field.upper()}): {error['msg']}")
        raise typer.Exit(2) from None


def _curve(settings: CurvePeerSettings) -> CurveKeys | None:
    """The peer's CURVE keys from --curve-secret/--curve-server; exit 2 naming a bad file."""
    from zmqflow.security.keys import KeyFileError
    from zmqflow.security.peer import resolve

    try:
        return resolve(None, settings.curve_secret, settings.curve_server)
    except KeyFileError as exc:
        _unusable(UnusableSetting(key_file_setting(settings, exc.path), exc.path, str(exc)))
    except ValueError as exc:  # the pair rule
        err.print(f"[red]bad CURVE keys:[/] {exc}")
        raise typer.Exit(2) from None


def _unusable(exc: UnusableSetting) -> NoReturn:
    """The one way a setting that cannot be used ends the process: exit 2, one line."""
    err.print(f"[red]not started:[/] {escape(exc.line())}")
    raise typer.Exit(2) from None


def _client(settings: ClientSettings, timeout: float) -> Client:
    from zmqflow.client import Client

    return Client(
        settings.connect,
        timeout=timeout,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_liveness=settings.heartbeat_liveness,
        curve=_curve(settings),
    )


def _logging(settings: ForwarderSettings | WorkerSettings | ClientSettings) -> None:
    from zmqflow.logs import setup

    setup(settings.log_level, settings.log_format)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@app.command()
@settings_options(ForwarderSettings)
def forwarder(settings: ForwarderSettings) -> None:
    """Run the forwarder device: clients' ROUTER, workers' ROUTER, events XSUB/XPUB."""
    _logging(settings)
    from zmqflow.forwarder import Forwarder
    from zmqflow.journal import JournalOpenError, JournalVersionError
    from zmqflow.security.keys import KeyFileError
    from zmqflow.security.policy import SecurityConfigError

    try:
        device = Forwarder(settings)
        if settings.metrics_port:
            device.serve_metrics(settings.metrics_port)
    except UnusableSetting as exc:
        _unusable(exc)
    except JournalOpenError as exc:
        _unusable(UnusableSetting("journal", settings.journal, str(exc)))
    except JournalVersionError as exc:
        _unusable(UnusableSetting("journal", settings.journal, f"cannot open the journal: {exc}"))
    except KeyFileError as exc:
        _unusable(UnusableSetting(key_file_setting(settings, exc.path), exc.path, str(exc)))
    except SecurityConfigError as exc:
        err.print(f"[red]not started:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except zmq.ZMQError as exc:
        err.print(f"[red]cannot bind:[/] {exc}")
        raise typer.Exit(1) from None
    signal.signal(signal.SIGTERM, lambda *_: device.stop())
    signal.signal(signal.SIGINT, lambda *_: device.stop())
    signal.signal(signal.SIGHUP, lambda *_: device.security.reload())  # re-read the allow-lists
    device.run()


@app.command()
@settings_options(WorkerSettings)
def worker(settings: WorkerSettings) -> None:
    """Serve tasks from a forwarder; SIGTERM drains (finish what is held, then leave)."""
    _logging(settings)
    from zmqflow.security.keys import KeyFileError
    from zmqflow.worker import Worker, resolve_handlers

    try:
        handlers = resolve_handlers(settings.service, settings.handler)
        runtime = Worker(settings, handlers)
    except KeyFileError as exc:
        _unusable(UnusableSetting(key_file_setting(settings, exc.path), exc.path, str(exc)))
    except ValueError as exc:
        err.print(f"[red]bad worker setup:[/] {exc}")
        raise typer.Exit(2) from None
    try:
        runtime.start_metrics()
    except OSError as exc:
        _unusable(UnusableSetting("metrics_port", settings.metrics_port, f"cannot serve: {exc}"))
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.stop())
    # Handlers run on threads: with the default 5 ms GIL switch interval the socket
    # thread waits behind a busy handler thread for milliseconds per message.
    sys.setswitchinterval(0.0002)
    runtime.run()
    # Terminating the context waits (up to the socket's linger) until the final
    # DISCONNECT is on the wire; exiting without it can drop that message.
    runtime.ctx.term()


@app.command()
@settings_options(ClientSettings)
def submit(
    settings: ClientSettings,
    service: Annotated[str, typer.Option(help="service to run")],
    count: Annotated[int, typer.Option(min=1, help="how many tasks")] = 1,
    payload: Annotated[str | None, typer.Option(help="payload text for every task")] = None,
    payload_bytes: Annotated[int, typer.Option(help="payload of B bytes when no --payload")] = 100,
    key_prefix: Annotated[
        str | None, typer.Option(help="idempotency key PREFIX-<n> per task")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every answer")] = 300.0,
    window: Annotated[int, typer.Option(min=1, help="tasks outstanding at once")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON summary")] = False,
) -> None:
    """Submit COUNT tasks, wait for every answer; the last line is a JSON summary."""
    _logging(settings)
    body = payload.encode() if payload is not None else b"x" * payload_bytes
    keys = [f"{key_prefix}-{n}" for n in range(count)] if key_prefix else None
    surfaced: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()
    latencies: list[float] = []
    completed = failed = refused = mismatched = 0
    errors: Counter[str] = Counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    start = time.monotonic()
    timed_out = False
    with _client(settings, timeout) as client, progress:
        bar = progress.add_task(f"{service}", total=count)
        if keys:  # keyed tasks go in one go, so that duplicates of a key meet in flight
            client.submit_many(service, [body] * count, keys=keys, wait_accepted=False)
            answers = client.as_completed(timeout)
        else:
            answers = client.stream(
                service, (body for _ in range(count)), window=window, timeout=timeout
            )
        try:
            for result in answers:
                surfaced[result.task_id] += 1
                progress.advance(bar)
                if result.ok:
                    completed += 1
                    latencies.append(result.latency_s)
                    by_worker[result.worker or "?"] += 1
                    if service in ("echo", "sleep") and result.payload != body:
                        mismatched += 1
                elif result.refused:
                    refused += 1
                    errors[f"{result.code}: {result.error}"] += 1
                else:
                    failed += 1
                    errors[f"{result.code}: {result.error}"] += 1
        except TimeoutError:
            timed_out = True
        session = client.session
        unanswered = list(session.pending)
        lost = sum(1 for i in unanswered if session.pending[i].accepted)
        reconnects = client.reconnects
    elapsed = time.monotonic() - start
    summary = {
        "service": service,
        "submitted": len(surfaced) + len(unanswered),
        "completed": completed,
        "failed": failed,
        "refused": refused,
        "lost": lost,
        "unacknowledged": len(unanswered) - lost,
        "duplicates": sum(n - 1 for n in surfaced.values() if n > 1),
        "redelivered": session.redelivered,
        "mismatched": mismatched,
        "elapsed_s": round(elapsed, 3),
        "throughput_per_s": round(completed / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "reconnects": reconnects,
        "timed_out": timed_out,
        "workers": dict(by_worker),
        "errors": dict(errors.most_common(5)),
    }
    if not as_json:
        table = Table(
            "submitted",
            "completed",
            "failed",
            "refused",
            "lost",
            "duplicates",
            "per s",
            "p50 ms",
            "p99 ms",
            title=f"zmqflow submit {service}",
        )
        table.add_row(
            *(
                str(summary[k])
                for k in (
                    "submitted",
                    "completed",
                    "failed",
                    "refused",
                    "lost",
                    "duplicates",
                    "throughput_per_s",
                    "p50_ms",
                    "p99_ms",
                )
            )
        )
        Console().print(table)
    print(json.dumps(summary))
    ok = completed + failed == count and not lost and not mismatched
    raise typer.Exit(0 if ok else 1)


@app.command()
@settings_options(ClientSettings)
def status(
    settings: ClientSettings,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the forwarder")] = 3.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the STATUS reply as JSON")] = False,
    watch: Annotated[bool, typer.Option(help="refresh the view live until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(min=0.01, help="seconds between refreshes")] = 2.0,
    refreshes: Annotated[int, typer.Option(min=0, help="stop after N views (0: never)")] = 0,
) -> None:
    """Workers, services, queues and dead letters; exit 1 if the forwarder does not answer.

    With --watch the view refreshes every --interval seconds (with --json: one
    JSON line per refresh) and a forwarder that does not answer is shown, not fatal.
    """
    from zmqflow.client import ForwarderUnreachable
    from zmqflow.status_view import render

    _logging(settings)
    if watch:
        _watch_status(settings, timeout, interval, refreshes, as_json)
        return
    try:
        with _client(settings, timeout) as client:
            info = client.status(timeout)
    except ForwarderUnreachable:
        err.print(f"[red]no answer from {settings.connect} within {timeout}s[/]")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(info))
        return
    Console().print(render(info, settings.connect))


def _watch_status(
    settings: ClientSettings, timeout: float, interval: float, refreshes: int, as_json: bool
) -> None:
    from rich.live import Live

    from zmqflow.status_view import view, watch

    def show_json(reply: Any) -> None:
        body = {"error": str(reply)} if isinstance(reply, Exception) else reply
        print(json.dumps(body), flush=True)

    with _client(settings, timeout) as client:
        fetch = lambda: client.status(timeout)  # noqa: E731
        try:
            if as_json:
                watch(fetch, show_json, interval, refreshes)
                return
            with Live(console=Console(), auto_refresh=False) as live:
                watch(
                    fetch,
                    lambda reply: live.update(view(reply, settings.connect), refresh=True),
                    interval,
                    refreshes,
                )
        except KeyboardInterrupt:
            pass


@app.command("dead-letters")
@settings_options(ClientSettings)
def dead_letters(
    settings: ClientSettings,
    retry: Annotated[bool, typer.Option(help="queue them again and wait for the answers")] = False,
    task_id: Annotated[list[str] | None, typer.Option("--id", help="only these ids")] = None,
    timeout: float = 60.0,
) -> None:
    """List dead letters, or run them again with --retry."""
    _logging(settings)
    with _client(settings, timeout) as client:
        if not retry:
            print(json.dumps(client.status()["dead_letters"]))
            return
        moved = client.retry_dead_letters(task_id or [])
        answers = [
            {"id": r.task_id, "ok": r.ok, "error": r.error} for r in client.as_completed(timeout)
        ]
    print(json.dumps({"retried": len(moved), "answers": answers}))


@app.command()
@settings_options(CurvePeerSettings)
def publish(
    settings: CurvePeerSettings,
    kind: Annotated[str, typer.Option(help="event kind; the topic is <env>.<kind>")],
    data: Annotated[str, typer.Option(help="JSON object")] = "{}",
    connect: Annotated[
        str, typer.Option(help="forwarder events-in (XSUB) endpoint")
    ] = "tcp://127.0.0.1:5557",
    env: Annotated[str, typer.Option(envvar="ZMQFLOW_ENV")] = "dev",
    count: int = 1,
    wait_subscriber: Annotated[
        float, typer.Option(help="seconds to wait for a subscriber of the topic")
    ] = 2.0,
) -> None:
    """Publish events through the forwarder's event bus."""
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        err.print(f"[red]--data must be a JSON object:[/] {exc}")
        raise typer.Exit(2) from None
    encoder = events.EventEncoder(env, events.new_source("cli"))
    keys = _curve(settings)
    # XPUB rather than PUB: it hears the subscriptions the forwarder passes up,
    # so events go out once someone listens instead of after a guessed sleep
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.linger = 2000
    if keys is not None:
        keys.apply(sock)
    sock.connect(connect)
    subscribed = _await_subscriber(sock, encoder.topic(kind).encode(), wait_subscriber)
    if not subscribed:
        err.print(f"no subscriber of {encoder.topic(kind)} within {wait_subscriber}s: sent anyway")
    for _ in range(count):
        sock.send_multipart(encoder.encode(kind, body))
    sock.close()
    summary = {"published": count, "topic": encoder.topic(kind), "last_seq": encoder.seq}
    print(json.dumps({**summary, "subscribed": subscribed}))


def _await_subscriber(sock: zmq.Socket, topic: bytes, timeout: float) -> bool:
    """True once a subscription covering ``topic`` reaches this XPUB socket."""
    until = time.monotonic() + timeout
    while (left := until - time.monotonic()) > 0:
        if sock.poll(int(left * 1000)):
            frame = sock.recv()
            if frame[:1] == b"\x01" and topic.startswith(frame[1:]):
                return True
    return False


@app.command()
@settings_options(CurvePeerSettings)
def subscribe(
    settings: CurvePeerSettings,
    topic: Annotated[str, typer.Option(help="topic prefix, e.g. dev.task.")] = "",
    connect: Annotated[
        str, typer.Option(help="forwarder events-out (XPUB) endpoint")
    ] = "tcp://127.0.0.1:5558",
    count: Annotated[int, typer.Option(help="stop after N events (0: never)")] = 0,
    timeout: Annotated[float, typer.Option(help="stop after S seconds (0: never)")] = 0.0,
) -> None:
    """Print events as JSON lines; the last line counts them and the gaps seen."""
    keys = _curve(settings)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    if keys is not None:
        keys.apply(sock)
    sock.subscribe(topic.encode())
    sock.connect(connect)
    gaps = events.GapTracker()
    received = 0
    until = time.monotonic() + timeout if timeout else None
    try:
        while not count or received < count:
            wait = None if until is None else max(0, int((until - time.monotonic()) * 1000))
            if not sock.poll(wait):
                break
            try:
                event = events.decode(sock.recv_multipart())
            except ValueError as exc:
                err.print(f"bad event dropped: {exc}")
                continue
            received += 1
            missed = gaps.see(event)
            print(
                json.dumps(
                    {
                        "topic": event.topic,
                        "source": event.source,
                        "seq": event.seq,
                        "missed_before": missed,
                        "data": event.data,
                    },
                    default=str,
                ),
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    print(json.dumps({"received": received, "missed": gaps.missed}))


@app.command()
def health(
    file: Annotated[Path, typer.Option(help="the worker's --health-file")],
    max_age: Annotated[float, typer.Option(help="seconds")] = 5.0,
) -> None:
    """Exit 0 if the worker heard its forwarder within MAX_AGE seconds (a healthcheck)."""
    from zmqflow.healthcheck import file_is_fresh

    problem = file_is_fresh(str(file), max_age)
    if problem:
        err.print(problem)
        raise typer.Exit(1)


keys_app = typer.Typer(no_args_is_help=True, help="CURVE key files (pyzmq's zmq.auth format).")
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="folder to write into (made if missing)")],
    names: Annotated[list[str], typer.Argument(help="one key pair per NAME")],
    force: Annotated[bool, typer.Option(help="replace existing key files")] = False,
) -> None:
    """Write DIR/NAME.key (public) and DIR/NAME.key_secret (owner-only) per NAME."""
    from zmqflow.security.keys import generate, load_public

    try:
        written = generate(directory, *names, force=force)
    except (FileExistsError, ValueError) as exc:
        err.print(f"[red]not written:[/] {exc}")
        raise typer.Exit(2) from None
    for path in written:
        if path.suffix == ".key":
            print(f"{path}  public key {load_public(path).decode()}")
        else:
            print(f"{path}  secret key, mode 0600")


# Durable event streams: `zmqflow streams device|events|publish|subscribe`. The
# sub-app mounts itself into ``app`` at the end of zmqflow.streams.cli (it uses
# settings_options from here), so either module may be imported first.
import zmqflow.streams.cli  # noqa: E402, F401
