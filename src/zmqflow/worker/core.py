"""The worker's protocol state without sockets, beside the client core.

Contract: ``WorkerCore`` holds what a worker must not lose whatever its
socket does: the tasks its handlers run (``running``), the answers not
sent yet (``outbox``) and those sent since the forwarder was last heard
(``unconfirmed``), RESULT and FAILED items apart, oldest first. The I/O
shell (runtime.py) calls it:

- ``ready()``: the READY to announce with (credit 0 while draining; its
  ``inflight`` lists the running tasks and the answers still held, which go
  out right after it);
- ``take_answers(answers)``: handler outcomes ``(id, output, error)`` into
  the outbox (output None: failed);
- ``flush(send)``: the outbox as RESULT and FAILED messages through
  ``send(frames) -> bool`` (False: the socket would block; the rest stays);
- ``heard()``: the forwarder is alive past what was sent: confirmed;
- ``new_socket()``: a socket closes with what it still queued: the
  unconfirmed answers go back to the outbox's front, to be sent again (the
  forwarder drops late duplicates).

The liveness rule (heartbeats, the silence deadline) and the backoff are
zmqflow.connection's, as the client's are. Tests drive this class alone
(tests/test_worker_core.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from zmqflow import __version__
from zmqflow import protocol as p
from zmqflow.connection import Liveness

Answer = tuple[str, bytes | None, str | None]  # task id, output, error
Item = list[Any]  # a RESULT item [id, output] or a FAILED item [id, error]


class WorkerCore:
    def __init__(
        self,
        worker_id: str,
        services: Iterable[str],
        credit: int,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
    ) -> None:
        self.id = worker_id
        self.services = list(services)
        self.credit = credit
        self.draining = False
        self.running: set[str] = set()
        self.outbox: tuple[list[Item], list[Item]] = ([], [])
        self.unconfirmed: tuple[list[Item], list[Item]] = ([], [])
        self.completed = 0
        self.liveness = Liveness(heartbeat_interval, heartbeat_liveness)
        self.ever_heard = False

    def ready(self) -> p.Ready:
        held = self.running.union(item[0] for items in self.outbox for item in items)
        return p.Ready(
            self.id,
            "python",
            self.services,
            0 if self.draining else self.credit,
            sorted(held),
            __version__,
            os.getpid(),
            socket.gethostname(),
        )

    def take_answers(self, answers: Iterable[Answer]) -> int:
        """Handler outcomes into the outbox; how many."""
        done, errors = self.outbox
        running = self.running
        count = 0
        for task_id, out, error in answers:
            running.discard(task_id)
            count += 1
            if out is not None:
                done.append([task_id, out])
            else:
                errors.append([task_id, error])
        self.completed += count
        return count

    def flush(self, send: Callable[[list[bytes]], bool]) -> bool:
        """Send the outbox; False when the socket would take no more (the rest
        stays for the next flush)."""
        took_all = True
        for kind, items, sent in (
            (p.WorkerResults, self.outbox[0], self.unconfirmed[0]),
            (p.WorkerFailures, self.outbox[1], self.unconfirmed[1]),
        ):
            if not items:
                continue
            taken = 0
            blocked = False
            for frames in p.encode_items(kind, items):
                if not send(frames):
                    blocked = True
                    break
                taken += item_count(frames[-1])
            sent.extend(items[:taken])
            del items[:taken]
            took_all = took_all and not blocked
        return took_all

    def heard(self, now: float) -> None:
        self.liveness.last_heard = now
        self.ever_heard = True
        done, failed = self.unconfirmed
        if done or failed:  # the forwarder is alive past them: they arrived
            done.clear()
            failed.clear()

    def new_socket(self, now: float) -> None:
        for outbox, unconfirmed in zip(self.outbox, self.unconfirmed, strict=True):
            outbox[:0] = unconfirmed
            unconfirmed.clear()
        self.liveness.last_heard = now  # the silence clock starts with the socket

    def held_answers(self) -> int:
        return sum(map(len, self.outbox)) + sum(map(len, self.unconfirmed))

    def nothing_held(self, answers_waiting: bool) -> bool:
        return not self.running and not answers_waiting and not self.held_answers()


def item_count(body: bytes) -> int:
    """Items in a batch body: the length of its msgpack array header."""
    head = body[0]
    if head & 0xF0 == 0x90:  # fixarray
        return head & 0x0F
    if head == 0xDC:  # array 16
        return int.from_bytes(body[1:3], "big")
    return int.from_bytes(body[1:5], "big")  # array 32
