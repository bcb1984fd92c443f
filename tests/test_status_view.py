"""``zmqflow status``'s screen, built from a STATUS reply without a socket (status_view)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from zmqflow.status_view import render, view, watch

REPLY: dict[str, Any] = {
    "forwarder": {"id": "fwd-1", "version": "0.1.0", "env": "dev", "uptime_s": 12.5},
    "workers": [
        {
            "id": "py-a",
            "language": "python",
            "services": ["echo", "sleep"],
            "credit": 4,
            "inflight": 3,
            "last_heartbeat_s": 0.25,
        },
        {
            "id": "rs-b",
            "language": "rust",
            "services": ["echo"],
            "credit": 8,
            "inflight": 0,
            "last_heartbeat_s": 1.0,
        },
    ],
    "services": ["echo", "sleep", "orphan"],
    "queues": {"echo": 7},
    "inflight": 3,
    "inflight_by_service": {"sleep": 3},
    "unjournaled": 0,
    "dead_letters": [{"id": "t-dead", "service": "sleep", "error": "worker lost", "attempts": 6}],
    "dead_letter_count": 1,
    "counters": {"completed": 10},
}


def text(renderable: Any) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def row(screen: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{screen}")


def test_the_view_shows_workers_services_and_dead_letters_of_a_reply() -> None:
    screen = text(render(REPLY, "tcp://fwd:5555"))
    assert "forwarder fwd-1 0.1.0 at tcp://fwd:5555" in screen
    assert "2 workers" in screen
    assert row(screen, "py-a") == ["py-a", "python", "echo,sleep", "4", "3", "0.2s ago"]
    assert row(screen, "rs-b") == ["rs-b", "rust", "echo", "8", "0", "1.0s ago"]
    assert row(screen, "echo") == ["echo", "7", "0", "2"]  # queued, in flight, workers
    assert row(screen, "sleep") == ["sleep", "0", "3", "1"]
    assert row(screen, "orphan") == ["orphan", "0", "0", "0"]
    assert "1 dead letters" in screen
    assert row(screen, "t-dead") == ["t-dead", "sleep", "6", "worker lost"]


def test_an_older_reply_without_per_service_in_flight_shows_unknown() -> None:
    old = {k: v for k, v in REPLY.items() if k != "inflight_by_service"}
    assert row(text(render(old, "ep")), "sleep") == ["sleep", "0", "?", "1"]


def test_no_dead_letters_no_dead_letter_table() -> None:
    quiet = {**REPLY, "dead_letters": [], "dead_letter_count": 0}
    assert "dead letters 0" in text(render(quiet, "ep"))
    assert "t-dead" not in text(render(quiet, "ep"))


def test_watch_refreshes_count_times_and_shows_a_failed_request() -> None:
    replies: list[Any] = [REPLY, TimeoutError("no answer"), REPLY]
    shown: list[Any] = []
    slept: list[float] = []

    def fetch() -> Any:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    assert watch(fetch, shown.append, 0.5, count=3, sleep=slept.append) == 3
    assert slept == [0.5, 0.5]  # between views, not after the last
    assert shown[0] is REPLY and isinstance(shown[1], TimeoutError)
    assert "no status from ep: no answer" in text(view(shown[1], "ep"))
    assert "2 workers" in text(view(shown[2], "ep"))
