"""The forwarder's journal: SQLite in WAL mode with group commit.

Contract: writes are buffered by the ``record_*`` methods and become durable
together at ``commit()``, one transaction (and, with ``sync="full"``, one
fsync when it holds new tasks) per forwarder loop turn. The forwarder sends
ACCEPTED only after the commit that holds the task, so a forwarder killed
with SIGKILL and restarted on the same file finds every accepted, unfinished
task in ``load_unfinished()``. Finished tasks keep their answer until
``purge``. A task that finished before it was first journaled is written
once, finished (``record_finished_new``), instead of inserted then updated:
without a key, into the answer log; with one, or dead-lettered, as a row
of ``tasks``.

Two stores share the connection and the transaction: ``TaskStore``
(tasks.py: the ``tasks`` table) and ``AnswerLog`` (answers.py: most
answers, one log row per commit, much cheaper per task than a ``tasks``
row: docs/benchmarks.md); every row written is a ``TaskRow`` or an ``Answer`` (rows.py).
Reads see this turn's writes before the commit.

The file records its schema version (``PRAGMA user_version``,
``SCHEMA_VERSION``); a journal of another version is refused with
``JournalVersionError`` rather than read wrongly. A journal written before
versions were recorded (version 0, with tables) has version 1's layout and
is marked version 1 when opened. A path that cannot be opened or created
raises ``JournalOpenError`` naming it.

Task states: ``pending`` (accepted, not finished), ``done`` (result),
``failed`` (handler error), ``dead`` (dead letter), ``alias`` (another id
for the task in ``alias_of``, from an idempotency key).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from zmqflow.journal.answers import AnswerLog
from zmqflow.journal.rows import (
    _SCHEMA,
    SCHEMA_VERSION,
    Answer,
    JournalVersionError,
    StoredTask,
    TaskFields,
    TaskRow,
)
from zmqflow.journal.tasks import TaskStore

__all__ = [
    "SCHEMA_VERSION",
    "Answer",
    "Journal",
    "JournalOpenError",
    "JournalVersionError",
    "StoredTask",
    "TaskFields",
    "TaskRow",
]


class JournalOpenError(RuntimeError):
    """The journal's path cannot be opened or created (the message names it and why)."""


class Journal:
    def __init__(
        self, path: str, sync: str = "full", clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        # wall-clock seconds for accepted_at / finished_at and the purge cutoff
        self.clock = clock
        self._fsync_new_tasks = sync == "full"
        self._synchronous = ""
        try:  # a path in no folder, a folder, a file that is no database, no write access
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._set_synchronous("NORMAL")
            self._check_version()
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise JournalOpenError(f"cannot open or create the journal: {exc}") from None
        # the stores read the journal's clock, which a test may replace
        self.tasks = TaskStore(self._db, self._now)
        self.log = AnswerLog(self._db, self._now)
        # the stores' writes and reads, under the journal's names
        self.record_accepted = self.tasks.record_accepted
        self.record_alias = self.tasks.record_alias
        self.record_finished = self.tasks.record_finished
        self.record_attempts = self.tasks.record_attempts
        self.record_requeued = self.tasks.record_requeued
        self.record_aliases_finished = self.tasks.record_aliases_finished
        self.add_service = self.tasks.add_service
        self.known_services = self.tasks.known_services
        self.load_unfinished = self.tasks.load_unfinished
        self.answer_for_key = self.tasks.answer_for_key
        self.dead_letter_summaries = self.tasks.dead_letter_summaries
        self.count_dead = self.tasks.count_dead

    def _now(self) -> float:
        return self.clock()

    def _check_version(self) -> None:
        """Refuse, before writing anything, a journal of an unknown schema version."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):  # 0: new, or from before versions
            self._db.close()
            raise JournalVersionError(
                f"journal {self.path} has schema version {version}, and this forwarder reads "
                f"version {SCHEMA_VERSION} only: run the zmqflow release that wrote it to "
                "finish its tasks, or point --journal at another file to start empty"
            )

    # ------------------------------------------------------------- writes
    def record_finished_new(self, task: TaskFields, state: str, *outcome: Any) -> None:
        """A task never journaled, finished already, written once in its final state
        (``outcome``: result, error, code, worker). Without a key, into the answer
        log; with a key (``answer_for_key`` finds it) or dead-lettered, as one
        ``tasks`` row, a dead letter with its payload so that RETRY can run it again.
        """
        store = self.log if task.key is None and state != "dead" else self.tasks
        store.record_finished_new(task, state, *outcome)

    @property
    def dirty(self) -> bool:
        """Writes are buffered that the next ``commit`` makes durable."""
        return self.tasks.dirty or self.log.dirty

    def _set_synchronous(self, level: str) -> None:
        if level != self._synchronous:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def commit(self) -> None:
        """Make every buffered write durable, in one transaction.

        A commit that records new pending tasks is fsynced (with ``sync="full"``):
        the ACCEPTED that follows promises the task survives. One that records
        only finishes (including tasks journaled once, finished), attempts or
        requeues is not: in WAL mode it still survives the forwarder's death
        (SIGKILL), and losing it to a power cut only means the task runs again,
        or its stored answer is gone before its time, which at-least-once
        delivery allows.
        """
        tasks, log = self.tasks, self.log
        if not (tasks.dirty or log.dirty):
            return
        db = self._db
        # Only pending tasks need the fsync: a task journaled finished is answered
        # in the same turn, so its row keeps the durability of any other finish.
        self._set_synchronous("FULL" if tasks.needs_fsync and self._fsync_new_tasks else "NORMAL")
        db.execute("BEGIN")
        try:
            tasks.write(db)
            log.write(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            tasks.clear()
            log.clear()

    # -------------------------------------------------------------- reads
    def answers(self, ids: Iterable[str]) -> dict[str, Answer]:
        """Stored answers for these ids (any state), by id, this turn's included."""
        ids = list(ids)
        tasks, log = self.tasks, self.log
        out = tasks.answers(ids)
        missing = [i for i in ids if i not in out]
        if missing:
            out.update(log.answers(missing))
        for task_id in ids:  # written this turn, not yet committed
            buffered = tasks.buffered_answer(task_id) or log.buffered_answer(task_id)
            if buffered is not None:
                out[task_id] = buffered
        return out

    def dead_letters(self, ids: Sequence[str] | None = None) -> list[StoredTask]:
        """Dead-lettered tasks (all, or those of ``ids``), payload included."""
        return self.tasks.dead_letters(ids)

    def purge(self, older_than_s: float, limit: int = 10_000) -> int:
        """Forget up to ``limit`` answers (and aliases) finished more than
        ``older_than_s`` ago; returns how many. A call that returns ``limit``
        or more left more: the forwarder calls again on its next tick, so one purge
        never stalls the loop for long."""
        cutoff = self.clock() - older_than_s
        purged = self.log.purge(cutoff, limit)
        return purged + self.tasks.purge(cutoff, max(0, limit - purged))

    def close(self) -> None:
        self.commit()
        self._db.close()
