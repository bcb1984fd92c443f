"""Continuous load from a client on the host that counts every task.

Contract: ``Load`` runs a ``zmqflow.Client`` in a thread: it keeps ``window`` tasks
outstanding (submitted in batches) until ``stop()``, then waits for every
outstanding answer up to ``drain_timeout``. Every task it created is counted:

- accepted: the forwarder journaled it (answered, or ACCEPTED and waiting);
- completed / failed / refused: answers surfaced by the client library;
- lost: accepted but never answered by the end of the drain;
- unacknowledged: submitted but neither accepted nor refused by the end;
- duplicates: answers surfaced twice for one task id (the promise is none);
- redelivered: second copies the client library dropped by id (allowed);
- mismatched: answers whose payload is not the one sent (sleep echoes it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from zmqflow.client import Client, TaskResult


@dataclass
class LoadCounts:
    submitted: int = 0
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    refused: int = 0
    lost: int = 0
    unacknowledged: int = 0
    duplicates: int = 0
    redelivered: int = 0
    mismatched: int = 0
    by_language: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def add(self, other: LoadCounts) -> None:
        for name, value in asdict(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        for name in ("by_language", "errors"):
            merged = Counter(getattr(self, name))
            merged.update(getattr(other, name))
            setattr(self, name, dict(merged))
        self.elapsed_s += other.elapsed_s

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{self.lost} accepted tasks lost")
        if self.duplicates:
            out.append(f"{self.duplicates} answers surfaced twice")
        if self.unacknowledged:
            out.append(f"{self.unacknowledged} tasks never acknowledged")
        if self.failed or self.refused:
            out.append(f"{self.failed} failed, {self.refused} refused: {self.errors}")
        if self.mismatched:
            out.append(f"{self.mismatched} answers with the wrong payload")
        if self.completed != self.accepted:
            out.append(f"completed {self.completed} of {self.accepted} accepted")
        return out


class Load:
    """``sleep`` tasks of ``task_ms`` each, ``window`` outstanding, until stopped."""

    def __init__(
        self,
        endpoint: str,
        *,
        task_ms: int = 40,
        window: int = 64,
        batch: int = 16,
        drain_timeout: float = 90.0,
    ) -> None:
        self.endpoint = endpoint
        self.payload = str(task_ms).encode()
        self.window = window
        self.batch = batch
        self.drain_timeout = drain_timeout
        self.counts = LoadCounts()
        self._surfaced: Counter[str] = Counter()
        self._languages: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded, name="chaos-load", daemon=True)
        self._started = 0.0

    # ------------------------------------------------------------ control
    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> LoadCounts:
        """Stop submitting, wait for the outstanding answers, return the counts."""
        self._stop.set()
        self._thread.join(self.drain_timeout + 30)
        if self._error is not None:
            raise RuntimeError("the load generator failed") from self._error
        return self.counts

    def wait_completed(self, more: int, timeout: float = 30.0) -> None:
        """Until ``more`` further tasks completed (the load is flowing)."""
        target = self.counts.completed + more
        deadline = time.monotonic() + timeout
        while self.counts.completed < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"load stalled: {self.counts.completed} completed, expected {target}"
                )
            time.sleep(0.05)

    # --------------------------------------------------------------- loop
    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def _run(self) -> None:
        with Client(self.endpoint, timeout=self.drain_timeout) as client:
            session = client.session
            while True:
                stopping = self._stop.is_set()
                if stopping and not session.outstanding:
                    break
                if not stopping and self.window - session.outstanding >= self.batch:
                    client.submit_many("sleep", [self.payload] * self.batch, wait_accepted=False)
                    self.counts.submitted += self.batch
                    continue
                try:
                    for result in client.as_completed(self.drain_timeout):
                        self._record(result)
                        if self._stop.is_set() != stopping:
                            break  # switch to draining: the deadline starts now
                        if not stopping and self.window - session.outstanding >= self.batch:
                            break  # room for another batch
                except TimeoutError:  # also ForwarderUnreachable
                    if stopping:
                        break
            self._finish(client)

    def _record(self, result: TaskResult) -> None:
        self._surfaced[result.task_id] += 1
        c = self.counts
        if result.ok:
            c.completed += 1
            if result.payload != self.payload:
                c.mismatched += 1
            worker = result.worker or "?"
            self._languages[worker.split("-", 1)[0]] += 1
        elif result.refused:
            c.refused += 1
            self._errors[f"{result.code}: {result.error}"] += 1
        else:
            c.failed += 1
            self._errors[f"{result.code}: {result.error}"] += 1

    def _finish(self, client: Client) -> None:
        c = self.counts
        session = client.session
        c.lost = sum(1 for e in session.pending.values() if e.accepted)
        c.unacknowledged = len(session.pending) - c.lost
        c.accepted = c.completed + c.failed + c.lost
        c.duplicates = sum(n - 1 for n in self._surfaced.values() if n > 1)
        c.redelivered = session.redelivered
        c.by_language = dict(self._languages)
        c.errors = dict(self._errors.most_common(5))
        c.elapsed_s = round(time.monotonic() - self._started, 2)
