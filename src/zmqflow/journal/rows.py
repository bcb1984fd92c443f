"""The journal's rows: its schema, and the one row type every write uses.

Contract: ``TaskRow`` is a row of ``tasks`` with every column named, in the
table's order: the tasks store (tasks.py) inserts pending tasks, aliases and
tasks journaled already finished from it, with one statement
(``INSERT_TASK``). ``Answer`` is what a task ended with, as both stores read
it back (a ``tasks`` row's outcome, or an item of the answer log, which
holds ``ANSWER_FIELDS`` of it); ``StoredTask`` is an unfinished or
dead-lettered task as the broker takes it back (``stored_task``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
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


class JournalVersionError(RuntimeError):
    """The journal file was written with a schema version this code does not read."""


@dataclass(slots=True)
class TaskRow:
    """One row of ``tasks``, every column, in the table's order."""

    id: str
    service: str
    key: str | None
    headers: bytes | None  # msgpack map, None when empty
    payload: bytes | None
    retries: int
    attempts: int
    client: bytes
    state: str  # pending, done, failed, dead, alias
    alias_of: str | None = None
    result: bytes | None = None
    error: str | None = None
    code: str | None = None
    worker: str | None = None
    accepted_at: float = 0.0
    finished_at: float | None = None


TASK_COLUMNS = tuple(f.name for f in fields(TaskRow))
INSERT_TASK = (
    f"INSERT OR IGNORE INTO tasks({', '.join(TASK_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(TASK_COLUMNS))})"
)
row_values = attrgetter(*TASK_COLUMNS)  # a TaskRow as INSERT_TASK's parameters


def pack_headers(headers: dict[str, Any]) -> bytes | None:
    return msgpack.packb(headers) if headers else None


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


STORED_COLUMNS = "id, service, key, headers, payload, retries, attempts, client"


def stored_task(row: Any, aliases: list[tuple[str, bytes]] | None = None) -> StoredTask:
    """A ``StoredTask`` of a row of ``STORED_COLUMNS``."""
    return StoredTask(
        row[0],
        row[1],
        row[2],
        msgpack.unpackb(row[3]) if row[3] else {},
        row[4] or b"",
        row[5],
        row[6],
        row[7] or b"",
        aliases or [],
    )


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


ANSWER_COLUMNS = "id, service, key, state, alias_of, result, error, code, worker, attempts"
# An answer in the log: these fields of it, as an array.
ANSWER_FIELDS = ("id", "service", "state", "result", "error", "code", "worker", "attempts")


def answer_from_log(item: list[Any]) -> Answer:
    task_id, service, state, result, error, code, worker, attempts = item[:8]
    return Answer(task_id, service, None, state, None, result, error, code, worker, attempts)
