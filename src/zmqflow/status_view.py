"""The ``zmqflow status`` screen: rich tables built from a STATUS reply.

Contract: ``render(info, endpoint)`` is a pure function of the STATUS map
(docs/protocol.md#status) and the endpoint asked: a ``rich`` renderable
with a forwarder line, a table of workers (id, language, services, credit,
in flight, last heartbeat), a table of services (queued, in flight,
workers serving it) and, when there are any, the dead letters (the oldest
100 the reply lists, titled with the total). Keys a forwarder does not send
show as "?" rather than failing. ``watch(fetch, show, interval, count)``
is the refresh loop of ``status --watch``: it calls ``fetch`` every
``interval`` seconds and hands each reply (or the error) to ``show``, which
in the CLI puts ``view(reply, endpoint)`` on a ``rich.live.Live``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


def _services(info: Mapping[str, Any]) -> list[str]:
    names = set(info.get("services") or [])
    names.update(info.get("queues") or {})
    names.update(info.get("inflight_by_service") or {})
    for worker in info.get("workers") or []:
        names.update(worker.get("services") or [])
    return sorted(names)


def workers_table(info: Mapping[str, Any]) -> Table:
    workers = info.get("workers") or []
    table = Table(
        "worker",
        "language",
        "services",
        "credit",
        "in flight",
        "last heartbeat",
        title=f"{len(workers)} workers",
        title_justify="left",
    )
    for w in sorted(workers, key=lambda w: str(w.get("id", ""))):
        heard = w.get("last_heartbeat_s")
        table.add_row(
            str(w.get("id", "?")),
            str(w.get("language", "?")),
            ",".join(w.get("services") or []),
            str(w.get("credit", "?")),
            str(w.get("inflight", "?")),
            f"{heard:.1f}s ago" if isinstance(heard, int | float) else "?",
        )
    return table


def services_table(info: Mapping[str, Any]) -> Table:
    queues = info.get("queues") or {}
    running = info.get("inflight_by_service")
    table = Table(
        "service", "queued", "in flight", "workers", title="services", title_justify="left"
    )
    for service in _services(info):
        serving = sum(1 for w in info.get("workers") or [] if service in (w.get("services") or []))
        table.add_row(
            service,
            str(queues.get(service, 0)),
            "?" if running is None else str(running.get(service, 0)),
            Text(str(serving), style="red" if not serving else ""),
        )
    return table


def dead_letters_table(info: Mapping[str, Any]) -> Table | None:
    letters = info.get("dead_letters") or []
    total = info.get("dead_letter_count", len(letters))
    if not letters and not total:
        return None
    shown = f", oldest {len(letters)} shown" if len(letters) < total else ""
    table = Table(
        "task",
        "service",
        "attempts",
        "error",
        title=f"{total} dead letters{shown}",
        title_justify="left",
    )
    for letter in letters:
        table.add_row(
            str(letter.get("id", "?")),
            str(letter.get("service", "?")),
            str(letter.get("attempts", "?")),
            str(letter.get("error") or ""),
        )
    return table


def summary_line(info: Mapping[str, Any], endpoint: str) -> Text:
    fwd = info.get("forwarder") or {}
    queued = sum((info.get("queues") or {}).values())
    parts = [
        f"forwarder {fwd.get('id', '?')} {fwd.get('version', '')} at {endpoint}",
        f"up {fwd.get('uptime_s', 0):.0f}s" if "uptime_s" in fwd else "",
        f"queued {queued}",
        f"in flight {info.get('inflight', '?')}",
        f"dead letters {info.get('dead_letter_count', '?')}",
    ]
    return Text(" · ".join(p for p in parts if p), style="bold")


def render(info: Mapping[str, Any], endpoint: str) -> RenderableType:
    """The whole status screen for one STATUS reply."""
    parts: list[RenderableType] = [
        summary_line(info, endpoint),
        workers_table(info),
        services_table(info),
    ]
    letters = dead_letters_table(info)
    if letters is not None:
        parts.append(letters)
    return Group(*parts)


def view(reply: Mapping[str, Any] | Exception, endpoint: str) -> RenderableType:
    """``render`` of a reply, or the error line of a failed request."""
    if isinstance(reply, Exception):
        return Text(f"no status from {endpoint}: {reply}", style="red")
    return render(reply, endpoint)


def watch(
    fetch: Callable[[], Mapping[str, Any]],
    show: Callable[[Mapping[str, Any] | Exception], None],
    interval: float,
    count: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Fetch the status every ``interval`` seconds and ``show`` it, ``count`` times
    (0: until interrupted). A failed fetch is shown as its exception and the loop
    goes on (the forwarder may be restarting). Returns how many were shown."""
    shown = 0
    while True:
        try:
            reply: Mapping[str, Any] | Exception = fetch()
        except Exception as exc:
            reply = exc
        show(reply)
        shown += 1
        if count and shown >= count:
            return shown
        sleep(interval)
