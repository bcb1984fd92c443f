"""The repeat rule for warnings a peer can cause (zmqflow.repeats)."""

from __future__ import annotations

from zmqflow.repeats import Repeats, since


def test_the_first_occurrence_is_due_with_nothing_kept_quiet():
    assert Repeats(60).due("k", 0.0) == 0


def test_occurrences_within_the_interval_are_counted_not_due():
    repeats = Repeats(60)
    repeats.due("k", 0.0)
    assert [repeats.due("k", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]


def test_after_the_interval_the_warning_is_due_again_naming_how_many_were_kept_quiet():
    repeats = Repeats(60)
    repeats.due("k", 0.0)
    for t in (1.0, 2.0, 3.0):
        repeats.due("k", t)
    assert repeats.due("k", 60.0) == 3
    assert repeats.due("k", 61.0) is None


def test_keys_are_counted_apart():
    repeats = Repeats(60)
    repeats.due("a", 0.0)
    assert repeats.due("b", 1.0) == 0
    assert repeats.due("a", 2.0) is None


def test_past_remember_keys_everything_is_forgotten_and_due_again():
    repeats = Repeats(60, remember=2)
    repeats.due("a", 0.0)
    repeats.due("b", 0.0)
    assert repeats.due("c", 1.0) == 0  # the table was full: cleared, then c remembered
    assert repeats.due("a", 1.0) == 0


def test_since_names_the_quiet_count_only_when_there_was_one():
    assert since(0) == ""
    assert since(5) == "; 5 more since the last warning"
