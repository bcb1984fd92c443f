"""The answer log: answers of tasks that finished before they were journaled.

Contract: most tasks finish within ``journal_defer_ms`` of their acceptance
and carry no key; their answers (``ANSWER_FIELDS`` of an ``Answer``, as an
array) are written by ``write`` as one ``answer_log`` row per commit, a
msgpack array of them, plus one ``answer_ids`` row per task (id to log row)
for COLLECT and re-sent SUBMITs. ``answers`` reads them back, buffered ones
first; ``purge`` drops whole log rows, oldest first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack

from zmqflow.journal.rows import Answer, TaskFields, answer_from_log

_CHUNK = 900  # ids per IN (...) query, under SQLite's parameter limit


class AnswerLog:
    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._db = db
        self.clock = clock
        self._logged: dict[str, list[Any]] = {}  # this turn's answers, by id

    def record_finished_new(
        self, task: TaskFields, state: str, *outcome: bytes | str | None
    ) -> None:
        """A task finished before it was journaled (``outcome``: result, error,
        code, worker), into this turn's log row."""
        result, error, code, worker = outcome
        # ANSWER_FIELDS, in their order (a literal: this runs for most tasks)
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

    @property
    def dirty(self) -> bool:
        return bool(self._logged)

    def write(self, db: sqlite3.Connection) -> None:
        """This turn's answers as one log row, inside the caller's transaction."""
        if not self._logged:
            return
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

    def clear(self) -> None:
        self._logged.clear()

    def buffered_answer(self, task_id: str) -> Answer | None:
        item = self._logged.get(task_id)
        return None if item is None else answer_from_log(item)

    def answers(self, ids: list[str]) -> dict[str, Answer]:
        """Committed answers of the log for these ids, by id."""
        rows: dict[int, set[str]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
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
                    out[item[0]] = answer_from_log(item)
        return out

    def purge(self, cutoff: float, limit: int) -> int:
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
