"""Ids and idempotency keys: stable per task instance, distinct between them, in limits."""

from __future__ import annotations

import re

import pytest
from zmqflow_provider.keys import MAX_ID_BYTES, MAX_KEY_BYTES, Scope, id_prefix, item_id, item_key

ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def test_an_items_key_is_the_same_for_every_try_of_a_task_instance() -> None:
    scope = Scope("dag", "manual__2026-11-30T05:00:00+00:00", "rollup", -1)
    again = Scope("dag", "manual__2026-11-30T05:00:00+00:00", "rollup", -1)
    assert item_key(scope, 7) == item_key(again, 7)


@pytest.mark.parametrize(
    "other",
    [
        Scope("dag2", "run", "task", -1),
        Scope("dag", "run2", "task", -1),
        Scope("dag", "run", "task2", -1),
        Scope("dag", "run", "task", 0),
    ],
)
def test_keys_differ_between_task_instances(other: Scope) -> None:
    assert item_key(Scope("dag", "run", "task", -1), 0) != item_key(other, 0)


def test_keys_differ_between_items() -> None:
    scope = Scope("dag", "run", "task")
    assert len({item_key(scope, i) for i in range(1000)}) == 1000


def test_a_long_run_id_gives_a_hashed_key_within_the_protocol_limit() -> None:
    scope = Scope("d" * 200, "r" * 250, "t" * 250, 3)
    key = item_key(scope, 123_456)
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key == item_key(Scope("d" * 200, "r" * 250, "t" * 250, 3), 123_456)


def test_ids_are_fresh_per_try_and_valid() -> None:
    scope = Scope("dag", "run", "task")
    first, second = id_prefix(scope, 1), id_prefix(scope, 2)
    assert first != second and id_prefix(scope, 1) != first  # random bits too
    for index in (0, 9_999, 10**9):
        assert ID.match(item_id(first, index))
        assert len(item_id(first, index)) <= MAX_ID_BYTES


def test_an_id_that_would_not_fit_the_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        item_id("x" * 60, 123_456)
    with pytest.raises(ValueError, match="does not fit"):
        item_id("has space", 1)
