"""The broker's hot paths and its checked paths are one rulebook.

The usual SUBMIT (``Broker._submit_usual``) and the usual worker RESULT
(``protocol.decode_worker_results``) skip objects per item; everything else,
and every message when ``Broker.fast_paths`` is off, takes the checked way.
Two properties pin them together:

- the same random message sequence (valid, edge and malformed messages from
  clients and workers, clock ticks, loop turns) fed to a broker with its hot
  paths and to one without gives the same replies byte for byte, the same
  events, journal rows, counters, task table, queues and worker table;
- usual input does take the hot path (``Broker.paths`` counts each message's
  path), and input that is not usual does not: a hot path that always
  declined, or one that took a bool for an int, fails these tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from zmqflow import protocol as p
from zmqflow.forwarder.broker import Broker, Limits
from zmqflow.journal import Journal

C, W = p.CLIENT_SIGNATURE, p.WORKER_SIGNATURE
Frames = list[bytes]


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def limits() -> Limits:
    """Small limits, so that random sequences reach every one of them."""
    return Limits(
        max_retries=1,
        max_queue=8,
        max_queue_bytes=64,
        max_payload_bytes=16,
        max_batch=4,
        heartbeat_interval=1.0,
        heartbeat_liveness=3,
        journal_defer_s=0.5,
    )


@dataclass
class Clock:
    """One fake time for a broker (monotonic) and its journal (wall clock)."""

    now: float = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


@dataclass
class Side:
    """A broker on its own in-memory journal, and what it published."""

    clock: Clock
    fast: bool
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.journal = Journal(":memory:", clock=self.clock.wall)
        self.broker = Broker(
            self.journal,
            limits(),
            lambda kind, data: self.events.append((kind, data)),
            forwarder_id="fwd-test",
            clock=self.clock.monotonic,
        )
        self.broker.fast_paths = self.fast

    def turn(self) -> list[tuple[bytes, Frames]]:
        """One loop turn as the device runs it; what went out, in order."""
        broker = self.broker
        broker.dispatch()
        sent = broker.outbox_workers.take()
        broker.journal_due()
        self.journal.commit()
        return sent + broker.outbox_clients.take()

    def state(self) -> dict[str, Any]:
        """Everything observable but the sockets: tables, queues, journal."""
        b = self.broker
        # an invariant five routines keep: queued bytes are the queued tasks' payloads
        assert b.queued_bytes == sum(len(t.payload) for t in b.tasks.values() if t.worker is None)
        db = self.journal._db  # the test reads the rows the journal wrote
        return {
            "counters": dict(b.counters),
            "tasks": [
                (
                    t.id,
                    t.service,
                    t.key,
                    t.headers,
                    t.payload,
                    t.retries,
                    t.attempts,
                    t.client,
                    t.journaled,
                    t.accepted_at,
                    t.worker,
                    t.aliases,
                )
                for t in b.tasks.values()
            ],
            "queues": {s: [t.id for t in q] for s, q in b.queues.items()},
            "queued_bytes": b.queued_bytes,
            "unjournaled": list(b.unjournaled),
            "aliases": b.aliases,
            "keys": b.keys,
            "known": sorted(b.known_services),
            "workers": [
                (w.rid, w.id, w.services, w.credit, sorted(w.inflight), w.last_seen)
                for w in b.workers.values()
            ],
            "by_service": {s: [w.rid for w in ws] for s, ws in b.by_service.items()},
            "journal": {
                table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                for table in ("tasks", "services", "answer_log")
            }
            | {"answer_ids": db.execute("SELECT * FROM answer_ids ORDER BY id").fetchall()},
            "events": self.events,
        }


# ------------------------------------------------------------- strategies

GOOD_IDS = st.sampled_from([f"t-{i}" for i in range(10)])
IDS = GOOD_IDS | st.sampled_from(["", "bad id!", "x" * 65])
SERVICES = st.sampled_from(["echo", "sha"]) | st.sampled_from(["nope", "bad/svc", ""])
PAYLOADS = st.binary(max_size=20)  # max_payload_bytes is 16
FRESH = st.sampled_from([[True], [False], [], [1], [None]])
INTS = st.sampled_from([None, 0, 1, 2, True, False, -1, "1", 1.5])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.text(max_size=3) | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=8,
)

# the usual task the hot path takes: a valid id, a known service, a payload in bounds, fresh
taken_items = st.builds(
    lambda i, s, pl: [i, s, pl, None, {}, None, True],
    GOOD_IDS,
    st.sampled_from(["echo", "sha"]),
    st.binary(max_size=8),
)
usual_items = taken_items | st.builds(
    lambda i, s, pl, fresh: [i, s, pl, None, {}, None, *fresh], IDS, SERVICES, PAYLOADS, FRESH
)
# per field of a SUBMIT item, values the usual test or the rules must turn away
EDGES: dict[int, list[Any]] = {
    0: ["", "bad id!", "x" * 65, 7, None],
    1: ["nope", "bad/svc", "", 5],
    2: [b"x" * 17, "text", None],
    3: ["k1", "k2", "", 7],
    4: [{"h": 1}, [], None],
    5: [0, 1, 2, True, False, -1, "1", 1.5],
    6: [False, 1, None],
}


def _mutate(item: list[Any], changes: list[tuple[int, Any]], cut: bool) -> list[Any]:
    item = list(item)
    for index, value in changes:
        item[index] = value
    return item[:6] if cut else item  # cut: no fresh field, as older clients send


# a usual item with one or two fields changed: the near misses of the usual test
edge_items = st.builds(
    _mutate,
    taken_items,
    st.lists(
        st.sampled_from(sorted(EDGES)).flatmap(
            lambda i: st.tuples(st.just(i), st.sampled_from(EDGES[i]))
        ),
        min_size=1,
        max_size=2,
    ),
    st.booleans(),
)
submit_items = st.one_of(taken_items, taken_items, usual_items, edge_items, edge_items, JUNK)


def batch(sig: bytes, cmd: int, items: list[Any]) -> Frames:
    return [sig, bytes([cmd]), _pack(items)]


broken_bodies = st.sampled_from([[], [b"\xc1"], [_pack([])], [_pack({})], [_pack([]), b"x"]])


def client_op(cmd: int, items: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[Any]:
    whole = items.map(lambda its: batch(C, cmd, its))
    broken = broken_bodies.map(lambda body: [C, bytes([cmd]), *body])
    return st.tuples(st.just("client"), st.sampled_from([b"c1", b"c2"]), whole | broken)


submits = client_op(0x01, st.lists(submit_items, min_size=1, max_size=6))
# SUBMITs of usual tasks (the hot path's), each id once
usual_submits = client_op(
    0x01, st.lists(taken_items, min_size=1, max_size=3, unique_by=lambda item: item[0])
)
# one usual task with one field changed, drawn evenly from every (field, value) pair
# of EDGES: the inputs on which a hot path that drifted from the rules would differ
NEAR_MISSES = [(i, v) for i, values in EDGES.items() for v in values] + [(6, "cut")]
near_misses = client_op(
    0x01,
    st.builds(
        lambda item, change: [
            item[: change[0]] if change[1] == "cut" else _mutate(item, [change], False)
        ],
        taken_items,
        st.sampled_from(NEAR_MISSES),
    ),
)
id_lists = st.lists(IDS, max_size=4)
collects = st.tuples(
    st.just("client"),
    st.sampled_from([b"c1", b"c2"]),
    id_lists.map(lambda ids: [C, b"\x07", _pack(ids)]),
)
retries = st.tuples(
    st.just("client"),
    st.sampled_from([b"c1", b"c2"]),
    id_lists.map(lambda ids: [C, b"\x09", _pack(ids)]),
)
client_misc = st.tuples(
    st.just("client"),
    st.sampled_from([b"c1", b"c2"]),
    st.sampled_from([[C, b"\x06"], [C, b"\x08"], [C, b"\x06", _pack({})], [b"ZFC1", b"\x01"]]),
)

WORKERS = st.sampled_from([b"w1", b"w2"])
readies = st.builds(
    lambda rid, services, credit, inflight: (
        "worker",
        rid,
        [
            W,
            b"\x11",
            _pack(
                {
                    "worker": rid.decode(),
                    "language": "python",
                    "services": services,
                    "credit": credit,
                    "inflight": inflight,
                    "version": "1",
                    "pid": 1,
                    "host": "h",
                }
            ),
        ],
    ),
    WORKERS,
    st.lists(st.sampled_from(["echo", "sha"]), min_size=1, max_size=2),
    st.sampled_from([0, 1, 2, 3, True, -1]),
    st.lists(IDS, max_size=2),
)
good_done = st.builds(lambda i, out: [i, out], IDS, st.binary(max_size=4))
done_items = st.one_of(
    good_done,
    good_done,
    good_done,
    st.builds(lambda i, out: [i, out], IDS, st.sampled_from(["text", True, None, 1])),
)
worker_results = st.builds(
    lambda rid, items: ("worker", rid, batch(W, 0x13, items)),
    WORKERS,
    st.lists(done_items, min_size=1, max_size=4),
)
worker_failures = st.builds(
    lambda rid, items: ("worker", rid, batch(W, 0x14, items)),
    WORKERS,
    st.lists(
        st.builds(lambda i, e: [i, e], IDS, st.sampled_from(["boom", 5])), min_size=1, max_size=3
    ),
)
worker_misc = st.tuples(
    st.just("worker"),
    WORKERS,
    st.sampled_from(
        [
            [W, b"\x15"],
            [W, b"\x16", _pack({"reason": "drained"})],
            [W, b"\x13"],
            [W, b"\x13", b"\xc1"],
        ]
    ),
)
ticks = st.tuples(st.just("tick"), st.sampled_from([0.3, 1.0, 4.0]))
turns = st.tuples(st.just("turn"))

operations = st.one_of(
    usual_submits,
    usual_submits,
    near_misses,
    near_misses,
    submits,
    submits,
    collects,
    retries,
    client_misc,
    readies,
    worker_results,
    worker_results,
    worker_failures,
    worker_misc,
    ticks,
    turns,
    turns,
)
# a worker for both services first, so that usual tasks are known and run
FIRST = (
    "worker",
    b"w1",
    p.encode(p.Ready("w1", "python", ["echo", "sha"], 2, [], "1", 1, "h")),
)


def apply(side: Side, op: tuple[Any, ...]) -> list[tuple[bytes, Frames]]:
    kind = op[0]
    if kind == "client":
        side.broker.on_client(op[1], op[2])
    elif kind == "worker":
        side.broker.on_worker(op[1], op[2], side.clock.now)
    elif kind == "tick":
        side.broker.tick(side.clock.now)
    else:
        return side.turn()
    return []


# ------------------------------------------------------------- properties


@settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints its example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(operations, min_size=10, max_size=40))
def test_any_message_sequence_gives_the_same_everything_on_the_hot_and_checked_paths(ops):
    clock = Clock()
    fast, checked = Side(clock, fast=True), Side(clock, fast=False)
    for step, op in enumerate([FIRST, *ops, ("turn",)]):
        if op[0] == "tick":
            clock.now += op[1]
        sent_fast, sent_checked = apply(fast, op), apply(checked, op)
        assert sent_fast == sent_checked, f"replies differ after step {step}: {op!r}"
        assert fast.state() == checked.state(), f"state differs after step {step}: {op!r}"
    assert checked.broker.paths["submit_usual"] == checked.broker.paths["results_usual"] == 0
    event(f"hot SUBMIT taken: {fast.broker.paths['submit_usual'] > 0}")
    event(f"hot RESULT taken: {fast.broker.paths['results_usual'] > 0}")


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(submit_items, min_size=1, max_size=6))
def test_a_submit_item_that_the_usual_test_takes_decodes_to_the_same_task(items):
    for item in items:
        if p.usual_task(item):
            assert p.decode_task(item) == p.Task(
                item[0], item[1], item[2], None, {}, None, p.is_fresh(item)
            )


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(done_items, min_size=1, max_size=4))
def test_a_worker_result_the_hot_decoder_takes_decodes_alike_on_the_checked_one(items):
    frames = batch(W, 0x13, items)
    usual = p.decode_worker_results(frames)
    if usual is not None:
        decoded = p.decode(frames)
        assert [[d.id, d.payload] for d in decoded.items] == [item[:2] for item in usual]
    else:
        with pytest.raises(p.ProtocolError):
            p.decode(frames)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.builds(
            lambda i, w, a, c, pl: [i, w, a, c, pl],
            IDS,
            st.sampled_from(["w", 5]),
            INTS,
            st.sampled_from([True, False, 0, None]),
            st.sampled_from([b"", b"x", "x"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_client_result_the_hot_decoder_takes_decodes_alike_on_the_checked_one(items):
    frames = batch(C, 0x03, items)
    usual = p.decode_client_results(frames)
    if usual is not None:
        decoded = p.decode(frames)
        assert [[r.id, r.worker, r.attempts, r.cached, r.payload] for r in decoded.items] == usual
    else:
        with pytest.raises(p.ProtocolError):
            p.decode(frames)


# ------------------------------------ batch forms of the rules: the same rule

# ids near the id rule's edges, and ones that would fake a boundary where
# valid_ids joins a message's ids with newlines
EDGE_IDS = IDS | st.sampled_from(["a\n", "\nb", "a\nb", "\n", "x" * 64, "é", "a b"])


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(EDGE_IDS, max_size=6))
def test_the_ids_of_a_message_pass_together_exactly_when_each_passes_alone(ids):
    assert p.valid_ids(ids) == all(p.valid_id(i) for i in ids)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(submit_items, max_size=6), st.lists(done_items, max_size=4))
def test_a_batch_is_usual_exactly_when_each_of_its_items_is(tasks, dones):
    assert p.usual_tasks(tasks) == all(p.usual_task(i) for i in tasks)
    usual = [i for i in tasks if p.usual_task(i)]
    assert p.all_fresh(usual) == all(p.is_fresh(i) for i in usual)
    assert p.usual_dones(dones) == all(p.usual_done(i) for i in dones)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(INTS, max_size=4), st.lists(st.tuples(IDS, INTS, PAYLOADS), max_size=4))
def test_counting_fields_and_their_items_pass_together_exactly_when_each_does(values, fields):
    assert p.uints(values) == all(p.uint(v) for v in values)
    dispatches = [[i, "echo", {}, n, pl] for i, n, pl in fields]
    results = [[i, "w", n, False, pl] for i, n, pl in fields]
    assert p.usual_dispatches(dispatches) == all(p.usual_dispatch(i) for i in dispatches)
    assert p.usual_results(results) == all(p.usual_result(i) for i in results)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(EDGE_IDS, SERVICES, st.binary(max_size=20)),
        min_size=1,
        max_size=5,
    )
)
def test_a_message_has_no_problem_exactly_when_none_of_its_tasks_has_one(tasks):
    broker = Side(Clock(), fast=True).broker
    broker.on_worker(b"w1", FIRST[2], 1000.0)
    ids, services, payloads = (list(column) for column in zip(*tasks, strict=True))
    alone = [broker._problem((i,), (s,), (pl,), None) for i, s, pl in tasks]
    assert (broker._problem(ids, set(services), payloads, None) is None) == (
        alone == [None] * len(tasks)
    )


# -------------------------------------------------- which path ran, and when


@pytest.fixture
def side() -> Side:
    s = Side(Clock(), fast=True)
    s.broker.on_worker(b"w1", FIRST[2], s.clock.now)
    return s


def usual_submit(*ids: str) -> Frames:
    return batch(C, 0x01, [[i, "echo", b"in", None, {}, None, True] for i in ids])


def test_a_usual_submit_takes_the_hot_path_and_its_tasks_are_held(side):
    side.broker.on_client(b"c1", usual_submit("t-1", "t-2"))

    assert side.broker.paths["submit_usual"] == 1
    assert side.broker.paths["submit_checked"] == 0
    assert list(side.broker.tasks) == ["t-1", "t-2"]


def test_a_usual_worker_result_takes_the_hot_path_and_answers_the_client(side):
    side.broker.on_client(b"c1", usual_submit("t-1"))
    side.turn()

    side.broker.on_worker(b"w1", batch(W, 0x13, [["t-1", b"out"]]), side.clock.now)

    assert side.broker.paths["results_usual"] == 1
    assert side.broker.paths["results_checked"] == 0
    ((rid, frames),) = side.turn()
    assert (rid, p.decode(frames)) == (b"c1", p.Results([p.Result("t-1", "w1", 1, False, b"out")]))


def test_with_the_hot_paths_off_every_message_takes_the_checked_path(side):
    side.broker.fast_paths = False
    side.broker.on_client(b"c1", usual_submit("t-1"))
    side.turn()
    side.broker.on_worker(b"w1", batch(W, 0x13, [["t-1", b"out"]]), side.clock.now)

    assert side.broker.paths == {
        "submit_usual": 0,
        "submit_checked": 1,
        "results_usual": 0,
        "results_checked": 1,
    }


USUAL = ["t-1", "echo", b"in", None, {}, None, True]


def _with(index: int, value: Any) -> list[Any]:
    item = list(USUAL)
    item[index] = value
    return item


@pytest.mark.parametrize(
    ("item", "refusal"),
    [
        (_with(5, True), "malformed"),  # retries: a bool is not an int
        (_with(5, False), "malformed"),
        (_with(5, -1), "malformed"),
        (_with(2, "in"), "malformed"),  # payload: str, not bin
        (_with(0, "bad id!"), "malformed"),
        (_with(1, "nope"), "unknown_service"),
        (_with(2, b"x" * 17), "too_large"),
        (_with(4, []), "malformed"),  # headers: not a map
        (_with(3, 7), "malformed"),  # key: not a str
    ],
    ids=[
        "retries-true",
        "retries-false",
        "retries-negative",
        "payload-str",
        "bad-id",
        "unknown-service",
        "payload-too-large",
        "headers-list",
        "key-int",
    ],
)
def test_a_task_the_rules_refuse_is_declined_by_the_hot_path_and_refused(side, item, refusal):
    side.broker.on_client(b"c1", batch(C, 0x01, [item]))

    assert side.broker.paths == {
        "submit_usual": 0,
        "submit_checked": 1,
        "results_usual": 0,
        "results_checked": 0,
    }
    assert side.broker.tasks == {}
    ((rid, frames),) = side.turn()
    assert (rid, p.decode(frames).code) == (b"c1", refusal)


@pytest.mark.parametrize(
    "item",
    [_with(6, False), USUAL[:6], _with(3, "k1"), _with(4, {"h": 1}), _with(5, 0)],
    ids=["not-fresh", "fresh-absent", "key", "headers", "retries-0"],
)
def test_a_valid_task_that_is_not_the_usual_one_is_taken_on_the_checked_path(side, item):
    side.broker.on_client(b"c1", batch(C, 0x01, [item]))

    assert (side.broker.paths["submit_usual"], side.broker.paths["submit_checked"]) == (0, 1)
    assert list(side.broker.tasks) == ["t-1"]


def test_an_id_already_held_or_twice_in_a_submit_sends_it_the_checked_way(side):
    side.broker.on_client(b"c1", usual_submit("t-1"))
    side.broker.on_client(b"c1", usual_submit("t-1"))
    side.broker.on_client(b"c1", usual_submit("t-2", "t-2"))

    assert (side.broker.paths["submit_usual"], side.broker.paths["submit_checked"]) == (1, 2)
    assert list(side.broker.tasks) == ["t-1", "t-2"]


def test_a_submit_past_the_queue_limit_is_declined_by_the_hot_path(side):
    side.broker.on_client(b"c1", usual_submit(*(f"t-{i}" for i in range(4))))
    side.broker.on_client(b"c1", usual_submit(*(f"t-{i}" for i in range(4, 8))))
    side.broker.on_client(b"c1", usual_submit("t-8", "t-9"))  # max_queue 8

    assert (side.broker.paths["submit_usual"], side.broker.paths["submit_checked"]) == (2, 1)
    assert len(side.broker.tasks) == 8


@pytest.mark.parametrize(
    "item", [["t-1", "out"], ["t-1", True], ["t-1"]], ids=["str-output", "bool-output", "short"]
)
def test_a_worker_result_the_rules_refuse_takes_the_checked_path_and_a_disconnect(side, item):
    side.broker.on_client(b"c1", usual_submit("t-1"))
    side.turn()

    side.broker.on_worker(b"w1", batch(W, 0x13, [item]), side.clock.now)

    assert side.broker.paths["results_usual"] == 0
    assert "t-1" in side.broker.tasks  # not completed by a bad answer
    disconnects = [p.decode(f) for rid, f in side.turn() if rid == b"w1"]
    assert [type(m) for m in disconnects] == [p.Disconnect]
