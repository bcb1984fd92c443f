"""Task ids (src/zmqflow/client/ids.py): UUIDv7, unique and time-ordered."""

from __future__ import annotations

import os
import select
import signal
import uuid

from zmqflow import protocol as p
from zmqflow.client import ids
from zmqflow.client.ids import UuidV7


def test_ids_are_valid_uuid_v7_and_valid_task_ids():
    made = UuidV7()()
    parsed = uuid.UUID(made)

    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert p.valid_id(made)


def test_ids_made_one_after_another_are_unique_and_sorted():
    new_id = UuidV7()
    made = [new_id() for _ in range(20_000)]

    assert len(set(made)) == len(made)
    assert made == sorted(made)


def test_more_ids_than_the_counter_holds_in_one_millisecond_borrow_the_next(monkeypatch):
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_000 * 1_000_000)
    new_id = UuidV7()
    made = [new_id() for _ in range(10_000)]

    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert {m[:12] for m in made} >= {f"{1_700_000_000_000 + k:012x}" for k in range(2)}


def test_a_clock_that_goes_back_still_gives_unique_sorted_ids(monkeypatch):
    clock = iter([5_000, 5_000, 4_000, 4_000, 6_000])
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock) * 1_000_000)
    new_id = UuidV7()
    made = [new_id() for _ in range(5)]

    assert len(set(made)) == 5
    assert made[:4] == sorted(made[:4])


def test_two_generators_or_a_reseeded_one_differ_in_their_random_bits():
    first, second = UuidV7(), UuidV7()
    assert first()[-16:] != second()[-16:]
    before = first()[-16:]
    first.reseed()  # what a forked child does
    assert first()[-16:] != before


def test_a_forked_child_makes_ids_of_its_own_even_if_the_lock_was_held():
    with ids.new_id._lock:
        parent_tail = ids.new_id._tail
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: must not deadlock, and must not repeat the parent
            os.close(read)
            os.write(write, ids.new_id()[-16:].encode())
            os._exit(0)
    os.close(write)
    answered, _, _ = select.select([read], [], [], 10)
    if not answered:  # the child is stuck on the lock it inherited
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    assert answered, "the forked child never made an id"
    assert os.read(read, 64).decode() != parent_tail
