"""No sender emits a frame its peer refuses (docs/protocol.md, size rule).

Contract: an id list (ACCEPTED, REFUSED, COLLECT, RETRY) of any length is
cut into messages whose body frame fits ``MAX_MAP_BYTES`` (64 KiB), in
order, none lost; a batch (TASK, RESULT, FAILED) into messages of at most
``max_batch`` items and 64 MiB. Checked on ``protocol.encode_split``, on
every frame the broker emits in one turn for huge batches, and on what the
client session sends (SUBMIT, COLLECT, resync, RETRY).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_broker import Forwarder, task

from zmqflow import protocol as p
from zmqflow.client.session import ClientSession
from zmqflow.forwarder.broker import Limits
from zmqflow.journal import Journal

_BATCHES = {p.Command.SUBMIT, p.Command.RESULT, p.Command.FAILED, p.Command.W_TASK}


def long_ids(count: int, prefix: str = "t") -> list[str]:
    """Ids of the longest valid length (64 characters): the worst case per id."""
    return [f"{prefix}-{i}".ljust(64, "x") for i in range(count)]


def assert_fits(frames: list[bytes], max_batch: int = p.MAX_BATCH) -> p.Message:
    """One message within every limit its peer checks; returns it decoded."""
    if frames[1][0] in _BATCHES:
        assert sum(map(len, frames)) <= p.MAX_MESSAGE_BYTES
    else:
        assert all(len(body) <= p.MAX_MAP_BYTES for body in frames[2:]), [len(f) for f in frames]
    msg = p.decode(frames)  # the peer's decoder takes it
    if isinstance(msg, p.Tasks | p.Results | p.Failures):
        assert len(msg.items) <= max_batch
    return msg


# ------------------------------------------------------------------ protocol


@pytest.mark.parametrize("kind", [p.Accepted, p.Collect, p.Retry])
def test_an_id_list_of_5000_long_ids_is_cut_into_frames_that_fit_in_order(kind: type) -> None:
    ids = long_ids(5000)

    messages = [assert_fits(frames) for frames in p.encode_split(kind(ids))]

    assert len(messages) > 1
    assert all(type(m) is kind for m in messages)
    assert [i for m in messages for i in m.ids] == ids


def test_a_refusal_of_5000_ids_keeps_its_code_and_reason_in_every_part() -> None:
    ids = long_ids(5000)
    reason = "no such task (never seen, or expired) " * 50

    messages = [assert_fits(f) for f in p.encode_split(p.Refused(ids, "unknown_task", reason))]

    assert len(messages) > 1
    assert {(m.code, m.reason) for m in messages} == {("unknown_task", reason)}
    assert [i for m in messages for i in m.ids] == ids


@pytest.mark.parametrize(
    "msg", [p.Accepted([]), p.Retry([]), p.Refused([], "malformed", "bad"), p.Collect(["a"])]
)
def test_a_short_or_empty_id_list_stays_one_message_byte_identical(msg: p.Message) -> None:
    assert p.encode_split(msg) == [p.encode(msg)]  # type: ignore[arg-type]


def test_split_ids_packs_as_many_ids_as_the_budget_holds() -> None:
    runs = p.split_ids(long_ids(3000))

    assert len(runs) == 4  # 66 bytes a packed id: 993 a frame
    assert all(len(p._pack(run)) <= p.MAX_MAP_BYTES for run in runs)
    assert len(p._pack(runs[0] + runs[1][:1])) > p.MAX_MAP_BYTES - 5  # no room left


# ------------------------------------------------------------------ broker


def broker_turn(fwd: Forwarder) -> list[tuple[bytes, list[bytes]]]:
    """One loop turn as the device runs it, the frames as they go on the wire."""
    broker = fwd.broker
    broker.dispatch()
    broker.journal_due()
    fwd.journal.commit()
    return broker.outbox_clients.take() + broker.outbox_workers.take()


@pytest.fixture
def fwd(tmp_path: Path) -> Forwarder:
    limits = Limits(max_queue=1_000_000, max_queue_bytes=1 << 30, max_payload_bytes=2 << 20)
    return Forwarder(Journal(str(tmp_path / "journal.db")), limits)


def submit_all(fwd: Forwarder, rid: bytes, tasks: list[p.Task]) -> None:
    for frames in p.encode_split(p.Submit(tasks)):
        fwd.client(rid, frames)


def test_5000_tasks_accepted_in_one_turn_are_acknowledged_in_frames_that_fit(fwd) -> None:
    fwd.ready(b"w0")  # the service is known; then no worker
    fwd.worker(b"w0", p.Disconnect("done"))
    fwd.turn()
    ids = long_ids(5000)

    submit_all(fwd, b"c1", [task(i) for i in ids])
    sent = [(rid, assert_fits(frames)) for rid, frames in broker_turn(fwd)]

    accepted = [m for rid, m in sent if rid == b"c1" and isinstance(m, p.Accepted)]
    assert len(accepted) > 1
    assert [i for m in accepted for i in m.ids] == ids


def test_a_refused_submit_of_1001_long_ids_names_every_id_in_frames_that_fit(fwd) -> None:
    ids = long_ids(p.MAX_BATCH + 1)

    fwd.client(b"c1", p.encode(p.Submit([task(i) for i in ids])))
    refused = [assert_fits(frames) for _, frames in broker_turn(fwd)]

    assert {(m.code) for m in refused} == {"too_large"}
    assert [i for m in refused for i in m.ids] == ids


def test_collect_and_retry_of_5000_unknown_ids_are_refused_in_frames_that_fit(fwd) -> None:
    ids = long_ids(5000)

    for frames in [*p.encode_split(p.Collect(ids)), *p.encode_split(p.Retry(ids))]:
        fwd.client(b"c1", frames)
    sent = [assert_fits(frames) for _, frames in broker_turn(fwd)]

    refused = [m for m in sent if isinstance(m, p.Refused)]
    assert {m.code for m in refused} == {"unknown_task"}
    assert sorted(i for m in refused for i in m.ids) == sorted(ids + ids)
    assert fwd.broker.counters["malformed"] == 0


def test_5000_answers_and_big_tasks_in_one_turn_go_out_in_messages_that_fit(fwd) -> None:
    ids = long_ids(5000)
    fwd.ready(b"w1", credit=5000)
    submit_all(fwd, b"c1", [task(i) for i in ids])
    to_worker = [assert_fits(frames) for rid, frames in broker_turn(fwd) if rid == b"w1"]
    assert sum(len(m.items) for m in to_worker if isinstance(m, p.Tasks)) == 5000

    for frames in p.encode_split(p.WorkerResults([p.Done(i, b"out") for i in ids])):
        fwd.worker(b"w1", frames)
    to_client = [assert_fits(frames) for rid, frames in broker_turn(fwd) if rid == b"c1"]
    assert [r.id for m in to_client if isinstance(m, p.Results) for r in m.items] == ids

    big = [task(f"big-{i}", payload=b"x" * (1 << 20)) for i in range(70)]  # 70 MiB in all
    submit_all(fwd, b"c1", big)
    tasks = [assert_fits(f) for rid, f in broker_turn(fwd) if rid == b"w1"]
    assert [d.id for m in tasks if isinstance(m, p.Tasks) for d in m.items] == [t.id for t in big]


# ------------------------------------------------------------------ client


def test_the_client_sends_collect_resync_and_retry_of_5000_ids_in_frames_that_fit() -> None:
    session = ClientSession()
    ids = long_ids(5000)
    submitted = [p.Task(i, "echo", b"") for i in ids[:2500]]
    for frames in session.submit_frames(submitted):
        assert_fits(frames)
    for frames in p.encode_split(p.Accepted(ids[:2500])):
        session.on_message(frames)

    collect = [assert_fits(f) for f in session.collect_frames(ids[2500:])]
    resync = [assert_fits(f) for f in session.resync_frames()]
    retry = [assert_fits(f) for f in session.retry_frames(ids)]

    assert [i for m in collect for i in m.ids] == ids[2500:]
    assert sorted(i for m in resync for i in m.ids) == sorted(ids)
    assert all(isinstance(m, p.Collect) for m in resync)
    assert [i for m in retry for i in m.ids] == ids


def test_a_client_logs_a_message_it_cannot_decode_instead_of_dropping_it_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = ClientSession()
    oversize = [p.CLIENT_SIGNATURE, bytes([p.Command.ACCEPTED]), p._pack(long_ids(2000))]

    with caplog.at_level(logging.WARNING, logger="zmqflow.client"):
        session.on_message(oversize)

    assert "forwarder message dropped (command 0x02, malformed)" in caplog.text
    assert "exceeds 64 KiB" in caplog.text


def test_a_retry_of_every_dead_letter_moves_what_one_accepted_lists_and_the_rest_next(
    fwd,
) -> None:
    ids = long_ids(1500)
    fwd.ready(b"w1", credit=1500)
    submit_all(fwd, b"c1", [task(i, retries=0) for i in ids])
    broker_turn(fwd)
    fwd.tick(60)  # the worker is silent: lost, each task's only attempt with it
    broker_turn(fwd)
    assert fwd.broker.counters["dead_lettered"] == 1500

    parts: list[list[str]] = []
    for _ in range(3):
        fwd.client(b"c1", p.encode(p.Retry([])))
        sent = [assert_fits(frames) for rid, frames in broker_turn(fwd) if rid == b"c1"]
        parts.append([i for m in sent if isinstance(m, p.Accepted) for i in m.ids])

    assert [len(part) > 0 for part in parts] == [True, True, False]
    assert sorted(parts[0] + parts[1]) == sorted(ids)


def test_a_ready_holding_3000_tasks_is_cut_and_the_broker_counts_every_one_in_flight(
    fwd,
) -> None:
    ids = long_ids(3000)
    ready = p.Ready("w1", "python", ["echo"], 5000, ids, "0.1.0", 1, "h")

    parts = [assert_fits(frames) for frames in p.encode_split(ready)]
    for part in parts:
        fwd.worker(b"w1", p.encode(part))

    assert len(parts) > 1
    assert all(part.worker == "w1" and part.credit == 5000 for part in parts)
    assert fwd.broker.workers[b"w1"].inflight == set(ids)
    assert len(fwd.broker.by_service["echo"]) == 1
