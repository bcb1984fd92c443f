"""The streams commands (typer): a sub-app to mount into ``zmqflow``'s CLI.

Contract: ``app`` holds ``device`` (run the streams device alone; its
options are generated from ``StreamDeviceSettings``, one per field, each
also read from its ZMQFLOW_* variable), ``events`` (streams and durable
subscribers, as a table or ``--json``), ``publish --confirm`` (returns once
stored; its last line is one JSON object; exit 1 with the device's refusal
or silence in words) and ``subscribe --durable NAME --from new|all|seq:N|time:T``
(one JSON line per event, ``{"missed": N, ...}`` lines for gaps, a summary
last). ``python -m zmqflow.streams`` runs it. Bad options exit 2 naming
the option. ``confirmed_publish`` and ``durable_subscribe`` are the two
commands' work as plain functions, for ``zmqflow publish --confirm`` and
``zmqflow subscribe --durable`` to call.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zmqflow.cli import settings_options
from zmqflow.security.peer import CurveKeys, resolve
from zmqflow.settings import CurvePeerSettings
from zmqflow.streams.settings import StreamDeviceSettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Durable event streams: stored before confirmed, replayed to durable subscribers.",
)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5559"
Connect = Annotated[
    str, typer.Option(envvar="ZMQFLOW_STREAMS_CONNECT", help="streams device endpoint")
]


def _curve(settings: CurvePeerSettings) -> CurveKeys | None:
    """The peer's CURVE keys from --curve-secret/--curve-server; exit 2 naming a bad file."""
    try:
        return resolve(None, settings.curve_secret, settings.curve_server)
    except ValueError as exc:  # KeyFileError names the file
        err.print(f"[red]bad CURVE keys:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
@settings_options(StreamDeviceSettings)
def device(settings: StreamDeviceSettings) -> None:
    """Run the streams device on its own (the forwarder runs it inside, once mounted)."""
    from zmqflow.logs import setup
    from zmqflow.security.keys import KeyFileError
    from zmqflow.security.policy import SecurityConfigError
    from zmqflow.settings import UnusableSetting
    from zmqflow.streams.device import standalone
    from zmqflow.streams.metrics import serve
    from zmqflow.streams.store import StoreVersionError

    setup(settings.log_level, settings.log_format)
    try:
        dev = standalone(settings)
    except UnusableSetting as exc:
        err.print(f"[red]not started:[/] {escape(exc.line())}")
        raise typer.Exit(2) from None
    except (SecurityConfigError, KeyFileError, StoreVersionError) as exc:
        err.print(f"[red]not started:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if settings.metrics_port:
        try:
            serve(dev, settings.metrics_port)
        except OSError as exc:
            err.print(f"[red]cannot serve metrics on port {settings.metrics_port}:[/] {exc}")
            raise typer.Exit(1) from None
    signal.signal(signal.SIGTERM, lambda *_: dev.stop())
    signal.signal(signal.SIGINT, lambda *_: dev.stop())
    signal.signal(signal.SIGHUP, lambda *_: dev.security.reload())
    try:
        dev.run()
    finally:
        dev.security.stop()


@app.command()
@settings_options(CurvePeerSettings)
def events(
    settings: CurvePeerSettings,
    connect: Connect = DEFAULT_ENDPOINT,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the device")] = 3.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the LIST reply as JSON")] = False,
) -> None:
    """Streams (retained events, bytes, oldest) and durable subscribers (position, lag)."""
    from zmqflow.streams.client import StreamError, list_streams

    try:
        info = list_streams(connect, timeout=timeout, curve=_curve(settings))
    except StreamError as exc:
        err.print(f"[red]no answer:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(info, default=str))
        return
    out = Console()
    streams = Table(title=f"streams ({info.get('device')})")
    for column in ("stream", "topics", "events", "bytes", "first", "last", "oldest", "dropped"):
        streams.add_column(column)
    for s in info.get("streams", []):
        oldest = s.get("oldest_ts")
        streams.add_row(
            s["name"],
            f"{s['prefix']}*",
            str(s["events"]),
            str(s["bytes"]),
            str(s["first"]),
            str(s["last"]),
            datetime.fromtimestamp(oldest).isoformat(timespec="seconds") if oldest else "-",
            str(s["dropped_events"]),
        )
    out.print(streams)
    subs = Table(title="durable subscribers")
    for column in (
        "stream",
        "name",
        "position",
        "lag",
        "in flight",
        "redeliveries",
        "missed",
        "connected",
    ):
        subs.add_column(column)
    for r in info.get("subscribers", []):
        subs.add_row(
            r["stream"],
            r["name"] or "(ephemeral)",
            str(r["position"]),
            str(r["lag"]),
            str(r["in_flight"]),
            str(r["redeliveries"]),
            str(r["missed"]),
            "yes" if r["connected"] else "no",
        )
    out.print(subs)


def _json_object(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError as exc:
        err.print(f"[red]--data must be a JSON object:[/] {exc}")
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        err.print("[red]--data must be a JSON object[/]")
        raise typer.Exit(2)
    return body


@app.command()
@settings_options(CurvePeerSettings)
def publish(
    settings: CurvePeerSettings,
    kind: Annotated[str, typer.Option(help="event kind; the topic is <env>.<kind>")],
    data: Annotated[str, typer.Option(help="JSON object")] = "{}",
    connect: Connect = DEFAULT_ENDPOINT,
    env: Annotated[str, typer.Option(envvar="ZMQFLOW_ENV")] = "dev",
    count: Annotated[int, typer.Option(min=1, help="events to publish")] = 1,
    event_id: Annotated[
        str | None,
        typer.Option("--id", help="event id (dedup key; with --count, ID-<n>); default random"),
    ] = None,
    confirm: Annotated[
        bool, typer.Option("--confirm/--no-confirm", help="wait until stored (always, here)")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for STORED")] = 10.0,
) -> None:
    """Publish events into a stream and return once they are stored."""
    if not confirm:
        err.print("[red]this command always confirms:[/] use `zmqflow publish` for the live bus")
        raise typer.Exit(2)
    confirmed_publish(_curve(settings), kind, data, connect, env, count, event_id, timeout)


def confirmed_publish(
    keys: CurveKeys | None,
    kind: str,
    data: str,
    connect: str,
    env: str,
    count: int = 1,
    event_id: str | None = None,
    timeout: float = 10.0,
) -> None:
    """``publish --confirm``'s work, for any command to call (``zmqflow publish
    --confirm``): prints one JSON object; exit 1 naming the refusal or silence."""
    from zmqflow.streams.client import Publisher, StreamError, new_event_id

    body = _json_object(data)
    topic = f"{env}.{kind}"
    if event_id is None:
        ids = [new_event_id() for _ in range(count)]
    else:
        ids = [event_id] if count == 1 else [f"{event_id}-{n}" for n in range(1, count + 1)]
    try:
        with Publisher(connect, timeout=timeout, curve=keys) as pub:
            stored = pub.publish_many([(topic, body, i) for i in ids])
    except StreamError as exc:
        err.print(f"[red]not stored:[/] {escape(str(exc))}")
        print(json.dumps({"published": 0, "stored": 0, "topic": topic, "error": str(exc)}))
        raise typer.Exit(1) from None
    print(
        json.dumps(
            {
                "published": count,
                "stored": sum(not c.duplicate for c in stored),
                "duplicates": sum(c.duplicate for c in stored),
                "topic": topic,
                "stream": stored[0].stream,
                "first_seq": stored[0].seq,
                "last_seq": stored[-1].seq,
                "ids": ids if count <= 10 else None,
            }
        )
    )


def parse_start(value: str) -> tuple[str, int | None, float | None]:
    """``--from``: ``new``, ``all``, ``seq:N`` (or N), ``time:T`` (Unix seconds or ISO 8601)."""
    text = value.strip()
    kind, _, rest = text.partition(":")
    if not rest:
        kind, _, rest = text.partition(" ")
    kind, rest = kind.strip().lower(), rest.strip()
    if kind in ("new", "all") and not rest:
        return kind, None, None
    if kind.isdigit() and not rest:
        return "seq", int(kind), None
    if kind == "seq" and rest.isdigit() and int(rest) >= 1:
        return "seq", int(rest), None
    if kind == "time" and rest:
        try:
            return "time", None, float(rest)
        except ValueError:
            pass
        try:
            return "time", None, datetime.fromisoformat(rest).timestamp()
        except ValueError:
            pass
    raise typer.BadParameter(
        f"{value!r}: give new, all, seq:N (N >= 1) or time:T (Unix seconds or ISO 8601)",
        param_hint="--from",
    )


@app.command()
@settings_options(CurvePeerSettings)
def subscribe(
    settings: CurvePeerSettings,
    durable: Annotated[
        str | None, typer.Option(help="durable subscriber NAME: resumes where it left off")
    ] = None,
    start: Annotated[
        str, typer.Option("--from", help="for a new NAME: new, all, seq:N or time:T")
    ] = "new",
    stream: Annotated[str, typer.Option(help="stream name")] = "events",
    topic: Annotated[str, typer.Option(help="topic prefix, e.g. dev.data.")] = "",
    connect: Connect = DEFAULT_ENDPOINT,
    count: Annotated[int, typer.Option(help="stop after N events (0: never)")] = 0,
    timeout: Annotated[
        float, typer.Option(help="stop after S seconds without one (0: never)")
    ] = 0.0,
    window: Annotated[int, typer.Option(min=1, max=10_000, help="events in flight")] = 100,
    ack_wait: Annotated[
        float, typer.Option(help="seconds before an unacked event comes again")
    ] = 30.0,
) -> None:
    """Print stored events as JSON lines, acknowledging each once printed."""
    durable_subscribe(
        _curve(settings), durable, start, stream, topic, connect, count, timeout, window, ack_wait
    )


def durable_subscribe(
    keys: CurveKeys | None,
    durable: str | None,
    start: str = "new",
    stream: str = "events",
    topic: str = "",
    connect: str = DEFAULT_ENDPOINT,
    count: int = 0,
    timeout: float = 0.0,
    window: int = 100,
    ack_wait: float = 30.0,
) -> None:
    """``subscribe --durable``'s work, for any command to call (``zmqflow
    subscribe --durable NAME --from ...``): JSON lines, a summary last."""
    from zmqflow.streams.client import StreamError, Subscriber

    kind, seq, since = parse_start(start)
    received = 0
    try:
        sub = Subscriber(
            connect,
            stream,
            durable,
            start=kind,
            seq=seq,
            time=since,
            topic=topic,
            window=window,
            ack_wait=ack_wait,
            curve=keys,
        )
    except ValueError as exc:
        err.print(f"[red]bad option:[/] {exc}")
        raise typer.Exit(2) from None
    gaps_seen = 0
    try:
        while not count or received < count:
            event = sub.get(timeout or None)
            for gap in sub.gaps[gaps_seen:]:
                print(json.dumps({"missed": gap.count, "first": gap.first, "last": gap.last}))
            gaps_seen = len(sub.gaps)
            if event is None:
                break
            print(
                json.dumps(
                    {
                        "stream": event.stream,
                        "seq": event.seq,
                        "id": event.id,
                        "topic": event.topic,
                        "ts": event.ts,
                        "attempt": event.attempt,
                        "data": event.data,
                    },
                    default=str,
                ),
                flush=True,
            )
            sub.ack(event)  # printed: handled
            received += 1
    except KeyboardInterrupt:
        pass
    except StreamError as exc:
        err.print(f"[red]subscription ended:[/] {escape(str(exc))}")
        sub.close()
        raise typer.Exit(1) from None
    sub.close()
    summary = {"received": received, "missed": sub.missed, "redelivered": sub.core.redelivered}
    print(json.dumps(summary), flush=True)
    sys.stdout.flush()


def _mount() -> None:
    """``zmqflow streams ...``: this sub-app under the main CLI, once."""
    from zmqflow import cli as root

    if not any(group.name == "streams" for group in root.app.registered_groups):
        root.app.add_typer(app, name="streams")


_mount()
