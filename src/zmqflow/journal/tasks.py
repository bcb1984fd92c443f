"""The ``tasks`` table: pending tasks, aliases, dead letters and keyed answers.

Contract: writes are buffered (``record_*``) and written by ``write`` inside
the journal's transaction; reads see the buffered finishes and the rows of
tasks journaled finished this turn before the commit (read your writes).
Every insert is a ``TaskRow`` (rows.py). ``needs_fsync`` says whether the
buffered writes hold new pending tasks (or aliases), the only writes an
ACCEPTED promises will survive.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from zmqflow.journal.rows import (
    ANSWER_COLUMNS,
    INSERT_TASK,
    STORED_COLUMNS,
    Answer,
    StoredTask,
    TaskFields,
    TaskRow,
    pack_headers,
    row_values,
    stored_task,
)

_CHUNK = 900  # ids per IN (...) query, under SQLite's parameter limit


class TaskStore:
    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._db = db
        self.clock = clock
        self._new: list[TaskRow] = []  # pending tasks and aliases: fsynced
        self._finished_new: list[TaskRow] = []  # tasks journaled once, finished
        self._updates: list[tuple[str, Sequence[Any]]] = []
        self._finishes: dict[str, dict[str, Any]] = {}  # by id
        # rows of record_finished_new, readable before the commit
        self._new_answers: dict[str, Answer] = {}
        self._new_answers_by_key: dict[str, Answer] = {}

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
        self._new.append(
            TaskRow(
                task_id,
                service,
                key,
                pack_headers(headers),
                payload,
                retries,
                attempts,
                client,
                "pending",
                None,
                None,
                None,
                None,
                None,
                self.clock(),
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
        """A task never journaled, finished already, as one row; a dead letter
        keeps its payload so that RETRY can run it again."""
        now = self.clock()
        answer = Answer(
            task.id, task.service, task.key, state, None, result, error, code, worker, task.attempts
        )
        self._new_answers[task.id] = answer
        if task.key:
            self._new_answers_by_key[task.key] = answer
        self._finished_new.append(
            TaskRow(
                task.id,
                task.service,
                task.key,
                pack_headers(task.headers),
                task.payload if state == "dead" else None,
                task.retries,
                task.attempts,
                task.client,
                state,
                None,
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
        self._new.append(
            TaskRow(
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
                None,
                None,
                None,
                None,
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
        return bool(self._new or self._finished_new or self._updates or self._finishes)

    @property
    def needs_fsync(self) -> bool:
        return bool(self._new)

    def write(self, db: sqlite3.Connection) -> None:
        """Every buffered write, inside the caller's transaction."""
        if self._new:
            db.executemany(INSERT_TASK, map(row_values, self._new))
        if self._finished_new:
            db.executemany(INSERT_TASK, map(row_values, self._finished_new))
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

    def clear(self) -> None:
        self._new.clear()
        self._finished_new.clear()
        self._updates.clear()
        self._finishes.clear()
        self._new_answers.clear()
        self._new_answers_by_key.clear()

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
            stored_task(row, aliases.get(row[0]))
            for row in self._db.execute(
                f"SELECT {STORED_COLUMNS} FROM tasks WHERE state='pending' ORDER BY rowid"
            )
        ]

    def answers(self, ids: list[str]) -> dict[str, Answer]:
        """Committed rows for these ids (any state), with this turn's finishes."""
        out: dict[str, Answer] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT {ANSWER_COLUMNS} FROM tasks WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = self._buffered(Answer(*row))
        return out

    def buffered_answer(self, task_id: str) -> Answer | None:
        """The row of a task journaled finished this turn, before the commit."""
        return self._new_answers.get(task_id)

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
            f"SELECT {ANSWER_COLUMNS} FROM tasks WHERE key=? AND state!='alias' "
            "ORDER BY rowid DESC LIMIT 1",
            (key,),
        ).fetchone()
        return self._buffered(Answer(*row)) if row else None

    def dead_letters(self, ids: Iterable[str] | None = None) -> list[StoredTask]:
        """Dead-lettered tasks (all, or those of ``ids``), payload included."""
        rows = self._db.execute(
            f"SELECT {STORED_COLUMNS} FROM tasks WHERE state='dead' ORDER BY rowid"
        )
        wanted = set(ids) if ids else None
        return [stored_task(r) for r in rows if wanted is None or r[0] in wanted]

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

    def purge(self, cutoff: float, limit: int) -> int:
        """Forget up to ``limit`` answered tasks and aliases finished before ``cutoff``."""
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
        return cur.rowcount + orphans.rowcount
