"""The forwarder's journal: SQLite in WAL mode with group commit.

Contract: writes are buffered by the ``record_*`` methods and become durable
together at ``commit()``, one transaction (and, with ``sync="full"``, one
fsync when it holds new tasks) per forwarder loop turn. The forwarder sends
ACCEPTED only after the commit that holds the task, so a forwarder killed
with SIGKILL and restarted on the same file finds every accepted, unfinished
task in ``load_unfinished()``. Finished tasks keep their answer until
``purge``. A task that finished before it was first journaled is written
once, finished (``record_finished_new``), instead of inserted then updated:
without a key, into the answer log (below); with one, or dead-lettered,
as a row of ``tasks``.

The answer log holds most answers, because most tasks finish before they
are first journaled: one ``answer_log`` row per commit, a msgpack array of
every such answer, and one ``answer_ids`` row per task (id to log row) for
COLLECT and re-sent SUBMITs. Writing a 15-column ``tasks`` row with its
indexes cost about three times as much per task as the log (see
docs/benchmarks.md); purging drops whole log rows.

The file records its schema version (``PRAGMA user_version``,
``SCHEMA_VERSION``); a journal of another version is refused with
``JournalVersionError`` rather than read wrongly. A journal written before
versions were recorded (version 0, with tables) has version 1's layout and
is marked version 1 when opened.

Task states: ``pending`` (accepted, not finished), ``done`` (result),
``failed`` (handler error), ``dead`` (dead letter), ``alias`` (another id
for the task in ``alias_of``, from an idempotency key).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

# The layout below. Change it only with a new version and a way to open the old one.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    key TEXT,
    headers BLOB,
    payload BLOB,
    retries INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    client BLOB,
    state TEXT NOT NULL,
    alias_of TEXT,
    result BLOB,
    error TEXT,
    code TEXT,
    worker TEXT,
    accepted_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_key ON tasks(key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_dead ON tasks(state) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS tasks_alias ON tasks(alias_of) WHERE alias_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS answer_log (
    n INTEGER PRIMARY KEY,
    finished_at REAL NOT NULL,
    answers BLOB NOT NULL  -- msgpack array of answers, each an array: id, service,
                           -- state, result, error, code, worker, attempts
);
CREATE TABLE IF NOT EXISTS answer_ids (
    id TEXT PRIMARY KEY,
    n INTEGER NOT NULL  -- the answer_log row holding its answer
) WITHOUT ROWID;
"""


_FINISHED_COLUMNS = "id, service, key, state, alias_of, result, error, code, worker, attempts"


class JournalVersionError(RuntimeError):
    """The journal file was written with a schema version this code does not read."""


@dataclass(slots=True)
class StoredTask:
    """An unfinished (or dead-lettered) task as the journal holds it."""

    id: str
    service: str
    key: str | None
    headers: dict[str, Any]
    payload: bytes
    retries: int
    attempts: int
    client: bytes
    aliases: list[tuple[str, bytes]]


class TaskFields(Protocol):
    """What ``record_finished_new`` reads of a task (the broker's TaskEntry has it)."""

    id: str
    service: str
    key: str | None
    headers: dict[str, Any]
    payload: bytes
    retries: int
    attempts: int
    client: bytes


@dataclass(slots=True)
class Answer:
    """The stored outcome of a task (or of an alias: ``alias_of`` is set)."""

    id: str
    service: str
    key: str | None
    state: str
    alias_of: str | None
    result: bytes | None
    error: str | None
    code: str | None
    worker: str | None
    attempts: int

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "dead")


def _answer_from_log(item: list[Any]) -> Answer:
    task_id, service, state, result, error, code, worker, attempts = item[:8]
    return Answer(task_id, service, None, state, None, result, error, code, worker, attempts)


class Journal:
    def __init__(
        self, path: str, sync: str = "full", clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        # wall-clock seconds for accepted_at / finished_at and the purge cutoff
        self.clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._fsync_new_tasks = sync == "full"
        self._synchronous = ""
        self._set_synchronous("NORMAL")
        self._check_version()
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._inserts: list[tuple[Any, ...]] = []
        self._finished_inserts: list[tuple[Any, ...]] = []
        self._updates: list[tuple[str, Sequence[Any]]] = []
        # reads see these before commit
        self._finishes: dict[str, dict[str, Any]] = {}  # by id
        self._new_answers: dict[str, Answer] = {}  # rows of record_finished_new, by id
        self._new_answers_by_key: dict[str, Answer] = {}
        self._logged: dict[str, list[Any]] = {}  # answers for the log, by id

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
    def record_accepted(
        self,
        task_id: str,
        service: str,
        key: str | None,
        headers: dict[str, Any],
        payload: bytes,
        retries: int,
        client: bytes,
        attempts: int = 0,
    ) -> None:
        self._inserts.append(
            (
                task_id,
                service,
                key,
                msgpack.packb(headers) if headers else None,
                payload,
                retries,
                attempts,
                client,
                "pending",
                None,
                self.clock(),
                None,
            )
        )

    def record_finished_new(
        self,
        task: TaskFields,
        state: str,
        result: bytes | None,
        error: str | None,
        code: str | None,
        worker: str | None,
    ) -> None:
        """A task never journaled, finished already, written once in its final state.

        Without a key, into the answer log. With a key (``answer_for_key``
        finds it) or dead-lettered, as one ``tasks`` row; a dead letter keeps
        its payload so that RETRY can run it again.
        """
        if task.key is None and state != "dead":
            self._logged[task.id] = [
                task.id,
                task.service,
                state,
                result,
                error,
                code,
                worker,
                task.attempts,
            ]
            return
        now = self.clock()
        answer = Answer(
            task.id, task.service, task.key, state, None, result, error, code, worker, task.attempts
        )
        self._new_answers[task.id] = answer
        if task.key:
            self._new_answers_by_key[task.key] = answer
        self._finished_inserts.append(
            (
                task.id,
                task.service,
                task.key,
                msgpack.packb(task.headers) if task.headers else None,
                task.payload if state == "dead" else None,
                task.retries,
                task.attempts,
                task.client,
                state,
                result,
                error,
                code,
                worker,
                now,
                now,
            )
        )

    def record_alias(
        self,
        alias_id: str,
        canonical_id: str,
        service: str,
        key: str | None,
        client: bytes,
        finished: bool,
    ) -> None:
        now = self.clock()
        self._inserts.append(
            (
                alias_id,
                service,
                key,
                None,
                None,
                0,
                0,
                client,
                "alias",
                canonical_id,
                now,
                now if finished else None,
            )
        )

    def record_finished(
        self,
        task_id: str,
        state: str,
        result: bytes | None,
        error: str | None,
        code: str | None,
        worker: str | None,
        attempts: int,
    ) -> None:
        self._finishes[task_id] = {
            "state": state,
            "result": result,
            "error": error,
            "code": code,
            "worker": worker,
            "attempts": attempts,
            "at": self.clock(),
            "id": task_id,
        }

    def record_attempts(self, task_id: str, attempts: int) -> None:
        self._updates.append(("UPDATE tasks SET attempts=? WHERE id=?", (attempts, task_id)))

    def record_requeued(self, task_id: str, client: bytes) -> None:
        """A dead letter goes back to pending, its attempts reset."""
        self._updates.append(
            (
                "UPDATE tasks SET state='pending', attempts=0, client=?, finished_at=NULL, "
                "error=NULL, code=NULL WHERE id=?",
                (client, task_id),
            )
        )

    def record_aliases_finished(self, canonical_id: str) -> None:
        self._updates.append(
            ("UPDATE tasks SET finished_at=? WHERE alias_of=?", (self.clock(), canonical_id))
        )

    def add_service(self, name: str) -> None:
        self._updates.append(("INSERT OR IGNORE INTO services(name) VALUES (?)", (name,)))

    @property
    def dirty(self) -> bool:
        return bool(
            self._inserts
            or self._finished_inserts
            or self._updates
            or self._finishes
            or self._logged
        )

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
        if not self.dirty:
            return
        db = self._db
        # Only pending tasks need the fsync: a task journaled finished is answered
        # in the same turn, so its row keeps the durability of any other finish.
        self._set_synchronous("FULL" if self._inserts and self._fsync_new_tasks else "NORMAL")
        db.execute("BEGIN")
        try:
            if self._inserts:
                db.executemany(
                    "INSERT OR IGNORE INTO tasks(id, service, key, headers, payload, retries, "
                    "attempts, client, state, alias_of, accepted_at, finished_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    self._inserts,
                )
            if self._finished_inserts:
                db.executemany(
                    "INSERT OR IGNORE INTO tasks(id, service, key, headers, payload, retries, "
                    "attempts, client, state, result, error, code, worker, accepted_at, "
                    "finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    self._finished_inserts,
                )
            if self._logged:
                log_row = db.execute(
                    "INSERT INTO answer_log(finished_at, answers) VALUES (?, ?)",
                    (self.clock(), msgpack.packb(list(self._logged.values()))),
                ).lastrowid
                # one statement for every id: SQLite walks the JSON array in C, where
                # executemany binds each row from Python (half the cost per task)
                db.execute(
                    "INSERT OR IGNORE INTO answer_ids(id, n) SELECT value, ? FROM json_each(?)",
                    (log_row, json.dumps(list(self._logged))),
                )
            for sql, args in self._updates:
                db.execute(sql, args)
            if self._finishes:
                db.executemany(
                    # a dead letter keeps its payload so that RETRY can run it again
                    "UPDATE tasks SET state=:state, result=:result, error=:error, code=:code, "
                    "worker=:worker, attempts=:attempts, finished_at=:at, "
                    "payload=CASE WHEN :state='dead' THEN payload ELSE NULL END WHERE id=:id",
                    list(self._finishes.values()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._inserts.clear()
            self._finished_inserts.clear()
            self._updates.clear()
            self._finishes.clear()
            self._new_answers.clear()
            self._new_answers_by_key.clear()
            self._logged.clear()

    # -------------------------------------------------------------- reads
    def known_services(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT name FROM services")}

    def load_unfinished(self) -> list[StoredTask]:
        """Pending tasks in the order they were accepted, with their aliases."""
        aliases: dict[str, list[tuple[str, bytes]]] = {}
        for alias_id, canonical, client in self._db.execute(
            "SELECT a.id, a.alias_of, a.client FROM tasks a JOIN tasks t ON a.alias_of = t.id "
            "WHERE a.state='alias' AND t.state='pending' ORDER BY a.rowid"
        ):
            aliases.setdefault(canonical, []).append((alias_id, client))
        return [
            StoredTask(
                row[0],
                row[1],
                row[2],
                msgpack.unpackb(row[3]) if row[3] else {},
                row[4] or b"",
                row[5],
                row[6],
                row[7] or b"",
                aliases.get(row[0], []),
            )
            for row in self._db.execute(
                "SELECT id, service, key, headers, payload, retries, attempts, client "
                "FROM tasks WHERE state='pending' ORDER BY rowid"
            )
        ]

    def answers(self, ids: Iterable[str]) -> dict[str, Answer]:
        """Stored rows for these ids (any state), by id."""
        ids = list(ids)
        out: dict[str, Answer] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT {_FINISHED_COLUMNS} FROM tasks WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = self._buffered(Answer(*row))
        missing = [i for i in ids if i not in out]
        if missing:
            out.update(self._logged_answers(missing))
        if self._new_answers or self._logged:
            for task_id in ids:
                if task_id in self._new_answers:
                    out[task_id] = self._new_answers[task_id]
                elif task_id in self._logged:
                    out[task_id] = _answer_from_log(self._logged[task_id])
        return out

    def _logged_answers(self, ids: list[str]) -> dict[str, Answer]:
        """Committed answers of the log for these ids, by id."""
        rows: dict[int, set[str]] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for task_id, n in self._db.execute(
                f"SELECT id, n FROM answer_ids WHERE id IN ({marks})", chunk
            ):
                rows.setdefault(n, set()).add(task_id)
        out: dict[str, Answer] = {}
        for n, wanted in rows.items():
            found = self._db.execute("SELECT answers FROM answer_log WHERE n=?", (n,)).fetchone()
            for item in msgpack.unpackb(found[0]) if found else ():
                if item[0] in wanted:
                    out[item[0]] = _answer_from_log(item)
        return out

    def _buffered(self, answer: Answer) -> Answer:
        """``answer`` with a finish recorded this loop turn (not yet committed) applied."""
        done = self._finishes.get(answer.id)
        if done is not None:
            for name in ("state", "result", "error", "code", "worker", "attempts"):
                setattr(answer, name, done[name])
        return answer

    def answer_for_key(self, key: str) -> Answer | None:
        """The canonical (non-alias) task holding this idempotency key, newest first."""
        if key in self._new_answers_by_key:
            return self._new_answers_by_key[key]
        row = self._db.execute(
            f"SELECT {_FINISHED_COLUMNS} FROM tasks WHERE key=? AND state!='alias' "
            "ORDER BY rowid DESC LIMIT 1",
            (key,),
        ).fetchone()
        return self._buffered(Answer(*row)) if row else None

    def dead_letters(self, ids: Sequence[str] | None = None) -> list[StoredTask]:
        """Dead-lettered tasks (all, or those of ``ids``), payload included."""
        rows = self._db.execute(
            "SELECT id, service, key, headers, payload, retries, attempts, client "
            "FROM tasks WHERE state='dead' ORDER BY rowid"
        )
        wanted = set(ids) if ids else None
        return [
            StoredTask(
                r[0],
                r[1],
                r[2],
                msgpack.unpackb(r[3]) if r[3] else {},
                r[4] or b"",
                r[5],
                r[6],
                r[7] or b"",
                [],
            )
            for r in rows
            if wanted is None or r[0] in wanted
        ]

    def dead_letter_summaries(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            {"id": r[0], "service": r[1], "error": r[2], "attempts": r[3]}
            for r in self._db.execute(
                "SELECT id, service, error, attempts FROM tasks WHERE state='dead' "
                "ORDER BY rowid LIMIT ?",
                (limit,),
            )
        ]

    def count_dead(self) -> int:
        return self._db.execute("SELECT count(*) FROM tasks WHERE state='dead'").fetchone()[0]

    def purge(self, older_than_s: float, limit: int = 10_000) -> int:
        """Forget up to ``limit`` answers (and aliases) finished more than
        ``older_than_s`` ago; returns how many. A call that returns ``limit``
        or more left more: the forwarder calls again on its next tick, so one purge
        never stalls the loop for long (a few µs an answer)."""
        cutoff = self.clock() - older_than_s
        purged = self._purge_log(cutoff, limit)
        limit = max(0, limit - purged)
        cur = self._db.execute(
            "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE finished_at < ? "
            "AND state IN ('done', 'failed', 'alias') LIMIT ?)",
            (cutoff, limit),
        )
        # an id that joined a key after its task finished may outlive that task
        orphans = self._db.execute(
            "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE alias_of IS NOT NULL "
            "AND alias_of NOT IN (SELECT id FROM tasks) LIMIT ?)",
            (limit,),
        )
        return purged + cur.rowcount + orphans.rowcount

    def _purge_log(self, cutoff: float, limit: int) -> int:
        """Drop the oldest answer_log rows finished before ``cutoff``, whole, with
        their ids, until about ``limit`` answers are gone; returns how many."""
        db = self._db
        ids: list[tuple[str]] = []
        rows: list[tuple[int]] = []
        # oldest first, by row number: only the expired head of the log is read
        cursor = db.execute("SELECT n, finished_at, answers FROM answer_log ORDER BY n")
        for n, finished_at, blob in cursor:
            if finished_at >= cutoff or len(ids) >= limit:
                break
            ids.extend((item[0],) for item in msgpack.unpackb(blob))
            rows.append((n,))
        cursor.close()
        if not rows:
            return 0
        db.execute("BEGIN")
        try:
            db.executemany("DELETE FROM answer_ids WHERE id=?", ids)
            db.executemany("DELETE FROM answer_log WHERE n=?", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(ids)

    def close(self) -> None:
        self.commit()
        self._db.close()
