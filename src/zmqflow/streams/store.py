"""The stream store: SQLite in WAL mode with group commit, as the journal is.

Contract: ``append`` gives an event the next sequence number of its stream
at once and buffers it; ``commit()`` makes every buffered event, subscriber
position and retention drop durable in one transaction (fsynced with
``sync="full"`` when it holds new events). The device confirms a publish
(STORED) only after the commit that holds it, so a device killed with
SIGKILL and restarted on the same file still has every confirmed event;
``read`` sees committed events only, so nothing is delivered before it is
stored.

A stream holds the events whose topic starts with its prefix (the longest
matching prefix wins: ``stream_for``). Its retained events are always one
contiguous run of sequence numbers ``first..last`` (retention drops from
the head); an empty stream has ``first == last + 1``, and ``last`` survives
the drop of everything, so numbers are never reused. Retention limits
(``Limits``: age in seconds, count, bytes; 0 is no limit) are applied at
each commit and at ``expire()``; what they drop is counted per stream
(``dropped_events``, ``dropped_bytes``) and kept across restarts.

Dedup: an id published to a stream again within ``dedup_window_s`` of its
first store is not stored again: ``append`` returns the first one's
sequence number with ``duplicate=True``. The window's ids are kept in
memory (about 100 bytes each) and rebuilt from the file when it opens.

Durable subscribers' records (``SubscriberRecord``) are saved with
``save_subscriber`` and written at the next commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    dropped_events INTEGER NOT NULL,
    dropped_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    topic TEXT NOT NULL,
    ts REAL NOT NULL,
    data BLOB NOT NULL,  -- the event's data, msgpack, as published
    size INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscribers (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    topic TEXT NOT NULL,
    position INTEGER NOT NULL,  -- every event up to it is acknowledged
    acked BLOB NOT NULL,        -- msgpack array: acknowledged sequence numbers above position
    redeliveries INTEGER NOT NULL,
    missed INTEGER NOT NULL,
    untold BLOB NOT NULL,       -- msgpack [missed, first, last] not yet known told, or []
    delivered INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;
"""


class StoreVersionError(RuntimeError):
    """The store file was written with a schema version this code does not read."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Retention limits of a stream; 0 means no limit of that kind."""

    max_age_s: float = 0.0
    max_events: int = 0
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str
    prefix: str
    limits: Limits = Limits()


@dataclass(slots=True)
class StreamState:
    """What the store knows of one stream, in memory (read by LIST and metrics)."""

    name: str
    prefix: str
    limits: Limits
    first: int = 1  # oldest retained seq; last + 1 when none is
    last: int = 0  # newest seq ever given (committed or buffered)
    committed: int = 0  # newest committed seq: what may be read and delivered
    events: int = 0
    bytes: int = 0
    oldest_ts: float | None = None
    dropped_events: int = 0
    dropped_bytes: int = 0
    dedup: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class StoredEvent:
    seq: int
    id: str
    topic: str
    ts: float
    data: bytes  # msgpack
    size: int


@dataclass(slots=True)
class SubscriberRecord:
    """A durable subscriber as the store keeps it."""

    stream: str
    name: str
    topic: str
    position: int
    acked: list[int] = field(default_factory=list)
    redeliveries: int = 0
    missed: int = 0
    untold: list[int] = field(default_factory=list)  # [missed, first, last] or []
    delivered: int = 0
    created_at: float = 0.0


def _record(row: tuple[Any, ...]) -> SubscriberRecord:
    """A subscribers row (stream, name, topic, position, acked, redeliveries,
    missed, untold, delivered, created_at) as a record."""
    return SubscriberRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        msgpack.unpackb(row[4]),
        row[5],
        row[6],
        msgpack.unpackb(row[7]),
        row[8],
        row[9],
    )


def event_size(event_id: str, topic: str, data: bytes) -> int:
    """The bytes an event counts for against ``max_bytes``: id, topic and data."""
    return len(event_id) + len(topic.encode()) + len(data)


class StreamStore:
    def __init__(
        self,
        path: str,
        streams: Iterable[StreamConfig],
        dedup_window_s: float = 120.0,
        sync: str = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.clock = clock  # wall-clock seconds: event ts, retention by age, dedup window
        self.dedup_window_s = dedup_window_s
        self._fsync_new = sync == "full"
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._synchronous = ""
        self._set_synchronous("NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            self._db.close()
            raise StoreVersionError(
                f"stream store {path} has schema version {version}; this code reads "
                f"version {SCHEMA_VERSION} only: point --streams-store at another file"
            )
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.streams: dict[str, StreamState] = {}
        # longest prefix first, so that stream_for takes the most specific stream
        self._by_prefix: list[StreamState] = []
        self._new_events: list[tuple[str, StoredEvent]] = []
        self._subscribers: dict[tuple[str, str], SubscriberRecord] = {}
        self._deleted_subscribers: set[tuple[str, str]] = set()
        for config in streams:
            self._open_stream(config)
        self._by_prefix = sorted(self.streams.values(), key=lambda s: -len(s.prefix))

    def _set_synchronous(self, level: str) -> None:
        if level != self._synchronous:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def _open_stream(self, config: StreamConfig) -> None:
        db = self._db
        row = db.execute(
            "SELECT last_seq, dropped_events, dropped_bytes FROM streams WHERE name=?",
            (config.name,),
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO streams(name, prefix, last_seq, dropped_events, dropped_bytes) "
                "VALUES (?, ?, 0, 0, 0)",
                (config.name, config.prefix),
            )
            row = (0, 0, 0)
        else:  # the configuration given wins over what the file says
            db.execute("UPDATE streams SET prefix=? WHERE name=?", (config.prefix, config.name))
        state = StreamState(config.name, config.prefix, config.limits)
        state.last = state.committed = row[0]
        state.dropped_events, state.dropped_bytes = row[1], row[2]
        first, count, size = db.execute(
            "SELECT min(seq), count(*), coalesce(sum(size), 0) FROM events WHERE stream=?",
            (config.name,),
        ).fetchone()
        state.first = first if first is not None else state.last + 1
        state.events, state.bytes = count, size
        state.oldest_ts = self._oldest_ts(state)
        cutoff = self.clock() - self.dedup_window_s
        recent = []
        for event_id, seq, ts in db.execute(
            "SELECT id, seq, ts FROM events WHERE stream=? ORDER BY seq DESC", (config.name,)
        ):
            if ts < cutoff:
                break
            recent.append((event_id, seq, ts))
        for event_id, seq, ts in reversed(recent):
            state.dedup[event_id] = (seq, ts)
        self.streams[config.name] = state

    def _oldest_ts(self, state: StreamState) -> float | None:
        row = self._db.execute(
            "SELECT ts FROM events WHERE stream=? AND seq=?", (state.name, state.first)
        ).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------- events
    def stream_for(self, topic: str) -> StreamState | None:
        """The stream holding ``topic``: the one with the longest prefix of it."""
        for state in self._by_prefix:
            if topic.startswith(state.prefix):
                return state
        return None

    def append(
        self, state: StreamState, event_id: str, topic: str, data: bytes
    ) -> tuple[int, bool]:
        """Buffer an event; its (seq, duplicate). A duplicate is not stored again."""
        now = self.clock()
        self._forget_old_ids(state, now)
        seen = state.dedup.get(event_id)
        if seen is not None:
            return seen[0], True
        state.last += 1
        event = StoredEvent(
            state.last, event_id, topic, now, data, event_size(event_id, topic, data)
        )
        state.dedup[event_id] = (state.last, now)
        self._new_events.append((state.name, event))
        return state.last, False

    def _forget_old_ids(self, state: StreamState, now: float) -> None:
        cutoff = now - self.dedup_window_s
        dedup = state.dedup
        while dedup:
            oldest = next(iter(dedup.values()))
            if oldest[1] >= cutoff:
                return
            dedup.popitem(last=False)

    def read(
        self, state: StreamState, after: int, limit: int, max_bytes: int = 1 << 62
    ) -> list[StoredEvent]:
        """Committed events of ``state`` with seq > ``after``, in order: at most
        ``limit`` of them and, beyond the first, about ``max_bytes``."""
        if after >= state.committed or limit <= 0:
            return []
        out: list[StoredEvent] = []
        size = 0
        for row in self._db.execute(
            "SELECT seq, id, topic, ts, data, size FROM events WHERE stream=? AND seq>? "
            "AND seq<=? ORDER BY seq LIMIT ?",
            (state.name, after, state.committed, limit),
        ):
            if out and size + row[5] > max_bytes:
                break
            out.append(StoredEvent(*row))
            size += row[5]
        return out

    def first_seq_at(self, state: StreamState, ts: float) -> int:
        """The first committed seq stored at ``ts`` or later; ``committed + 1`` if none."""
        row = self._db.execute(
            "SELECT min(seq) FROM events WHERE stream=? AND ts>=?", (state.name, ts)
        ).fetchone()
        return row[0] if row[0] is not None else state.committed + 1

    # ------------------------------------------------------- subscribers
    def load_subscriber(self, stream: str, name: str) -> SubscriberRecord | None:
        pending = self._subscribers.get((stream, name))
        if pending is not None:
            return pending
        row = self._db.execute(
            "SELECT stream, name, topic, position, acked, redeliveries, missed, untold, "
            "delivered, created_at FROM subscribers WHERE stream=? AND name=?",
            (stream, name),
        ).fetchone()
        return None if row is None else _record(row)

    def subscribers(self) -> list[SubscriberRecord]:
        """Every durable subscriber, as last saved (buffered saves included)."""
        stored = {
            (r[0], r[1]): _record(r)
            for r in self._db.execute(
                "SELECT stream, name, topic, position, acked, redeliveries, missed, untold, "
                "delivered, created_at FROM subscribers ORDER BY stream, name"
            )
        }
        stored.update(self._subscribers)
        return [r for k, r in stored.items() if k not in self._deleted_subscribers]

    def save_subscriber(self, record: SubscriberRecord) -> None:
        key = (record.stream, record.name)
        self._subscribers[key] = record
        self._deleted_subscribers.discard(key)

    def delete_subscriber(self, stream: str, name: str) -> None:
        self._subscribers.pop((stream, name), None)
        self._deleted_subscribers.add((stream, name))

    # ------------------------------------------------------------ commit
    @property
    def dirty(self) -> bool:
        return bool(self._new_events or self._subscribers or self._deleted_subscribers)

    def commit(self) -> dict[str, int]:
        """Write every buffered change in one transaction; applies count and byte
        limits to the streams that grew. Returns the events dropped, by stream."""
        if not self.dirty:
            return {}
        db = self._db
        self._set_synchronous("FULL" if self._new_events and self._fsync_new else "NORMAL")
        grown: dict[str, StreamState] = {}
        db.execute("BEGIN")
        try:
            if self._new_events:
                db.executemany(
                    "INSERT INTO events(stream, seq, id, topic, ts, data, size) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [
                        (name, e.seq, e.id, e.topic, e.ts, e.data, e.size)
                        for name, e in self._new_events
                    ],
                )
                for name, e in self._new_events:
                    state = self.streams[name]
                    if state.events == 0:
                        state.first, state.oldest_ts = e.seq, e.ts
                    state.events += 1
                    state.bytes += e.size
                    grown[name] = state
                for state in grown.values():
                    db.execute(
                        "UPDATE streams SET last_seq=? WHERE name=?", (state.last, state.name)
                    )
            dropped = {name: self._apply_limits(state, None) for name, state in grown.items()}
            if self._subscribers:
                db.executemany(
                    "INSERT OR REPLACE INTO subscribers(stream, name, topic, position, acked, "
                    "redeliveries, missed, untold, delivered, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.stream,
                            r.name,
                            r.topic,
                            r.position,
                            msgpack.packb(r.acked),
                            r.redeliveries,
                            r.missed,
                            msgpack.packb(r.untold),
                            r.delivered,
                            r.created_at,
                        )
                        for r in self._subscribers.values()
                    ],
                )
            if self._deleted_subscribers:
                db.executemany(
                    "DELETE FROM subscribers WHERE stream=? AND name=?",
                    list(self._deleted_subscribers),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._new_events.clear()
            self._subscribers.clear()
            self._deleted_subscribers.clear()
        for state in grown.values():
            state.committed = state.last
        return {name: n for name, n in dropped.items() if n}

    def expire(self) -> dict[str, int]:
        """Apply every stream's limits now (age above all, as time passes); the
        events dropped, by stream. Call it from time to time (the device: each tick)."""
        if self._new_events:
            self.commit()
        dropped: dict[str, int] = {}
        db = self._db
        self._set_synchronous("NORMAL")
        db.execute("BEGIN")
        try:
            for state in self.streams.values():
                n = self._apply_limits(state, self.clock())
                if n:
                    dropped[state.name] = n
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return dropped

    def _apply_limits(self, state: StreamState, now: float | None) -> int:
        """Drop the oldest events past the limits (age only when ``now`` is given),
        inside the caller's transaction; how many were dropped."""
        limits = state.limits
        over_count = limits.max_events and state.events > limits.max_events
        over_bytes = limits.max_bytes and state.bytes > limits.max_bytes
        age_cutoff = now - limits.max_age_s if now is not None and limits.max_age_s else None
        too_old = age_cutoff is not None and state.oldest_ts is not None
        too_old = too_old and state.oldest_ts < age_cutoff  # type: ignore[operator]
        if not (over_count or over_bytes or too_old):
            return 0
        must_drop = max(0, state.events - limits.max_events) if limits.max_events else 0
        count = size = 0
        cursor = self._db.execute(
            "SELECT seq, ts, size FROM events WHERE stream=? ORDER BY seq", (state.name,)
        )
        for _seq, ts, event_bytes in cursor:
            keep_for_count = count >= must_drop
            keep_for_bytes = not limits.max_bytes or state.bytes - size <= limits.max_bytes
            keep_for_age = age_cutoff is None or ts >= age_cutoff
            if keep_for_count and keep_for_bytes and keep_for_age:
                break
            count += 1
            size += event_bytes
        cursor.close()
        if not count:
            return 0
        cut = state.first + count - 1
        self._db.execute("DELETE FROM events WHERE stream=? AND seq<=?", (state.name, cut))
        state.first = cut + 1
        state.events -= count
        state.bytes -= size
        state.dropped_events += count
        state.dropped_bytes += size
        state.oldest_ts = self._oldest_ts(state) if state.events else None
        self._db.execute(
            "UPDATE streams SET dropped_events=?, dropped_bytes=? WHERE name=?",
            (state.dropped_events, state.dropped_bytes, state.name),
        )
        return count

    def close(self) -> None:
        self.commit()
        self._db.close()
