"""The SQLite journal (src/zmqflow/journal.py): group commit, recovery, answers, purge."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zmqflow.journal import SCHEMA_VERSION, Journal, JournalVersionError


@dataclass
class Clock:
    """Wall-clock seconds the journal reads (accepted_at, finished_at, purge)."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(path: str, clock: Clock) -> Journal:
    return Journal(path, clock=clock)


def accept(journal: Journal, task_id: str, key: str | None = None, client: bytes = b"c1") -> None:
    journal.record_accepted(task_id, "echo", key, {"h": 1}, task_id.encode(), 3, client)


def test_nothing_recorded_is_visible_to_another_connection_before_commit(journal, path):
    reader = Journal(path)
    accept(journal, "t-1")
    journal.add_service("echo")

    assert journal.dirty
    assert reader.load_unfinished() == []
    assert reader.known_services() == set()
    journal.commit()
    assert not journal.dirty
    assert [t.id for t in reader.load_unfinished()] == ["t-1"]
    assert reader.known_services() == {"echo"}


def test_a_finish_becomes_visible_to_another_connection_only_at_commit(journal, path):
    accept(journal, "t-1")
    journal.commit()
    reader = Journal(path)

    journal.record_finished("t-1", "done", b"out", None, None, "w1", 1)

    assert reader.answers(["t-1"])["t-1"].state == "pending"
    journal.commit()
    assert reader.answers(["t-1"])["t-1"].state == "done"
    assert reader.load_unfinished() == []


def test_one_commit_writes_every_buffered_change_together(journal, path):
    for i in range(50):
        accept(journal, f"t-{i}")
    journal.record_finished("t-0", "done", b"r", None, None, "w", 1)
    journal.record_attempts("t-1", 4)

    journal.commit()

    tasks = Journal(path).load_unfinished()
    assert len(tasks) == 49
    assert tasks[0].id == "t-1"
    assert tasks[0].attempts == 4


def test_commit_with_nothing_buffered_does_nothing(journal):
    journal.commit()
    assert not journal.dirty


def test_a_reopened_journal_holds_what_was_committed(journal, path):
    accept(journal, "t-1", key="k")
    journal.add_service("echo")
    journal.close()

    again = Journal(path)

    (stored,) = again.load_unfinished()
    assert (stored.id, stored.service, stored.key) == ("t-1", "echo", "k")
    assert (stored.headers, stored.payload, stored.retries) == ({"h": 1}, b"t-1", 3)
    assert (stored.attempts, stored.client, stored.aliases) == (0, b"c1", [])
    assert again.known_services() == {"echo"}


def test_load_unfinished_returns_pending_tasks_in_acceptance_order(journal):
    for task_id in ["z", "a", "m", "b"]:
        accept(journal, task_id)
    journal.commit()
    journal.record_finished("m", "done", b"", None, None, "w", 1)
    journal.record_finished("b", "dead", None, "lost", "dead_letter", None, 6)
    journal.commit()

    assert [t.id for t in journal.load_unfinished()] == ["z", "a"]


def test_an_id_is_recorded_once(journal):
    accept(journal, "t-1", client=b"first")
    accept(journal, "t-1", client=b"second")
    journal.commit()

    assert [(t.id, t.client) for t in journal.load_unfinished()] == [("t-1", b"first")]


def test_aliases_of_a_pending_task_come_back_with_it_in_order(journal):
    accept(journal, "a", key="k")
    journal.record_alias("b", "a", "echo", "k", b"c2", finished=False)
    journal.record_alias("c", "a", "echo", "k", b"c3", finished=False)
    journal.commit()

    (stored,) = journal.load_unfinished()

    assert stored.aliases == [("b", b"c2"), ("c", b"c3")]
    answer = journal.answers(["b"])["b"]
    assert (answer.state, answer.alias_of, answer.finished) == ("alias", "a", False)


def test_aliases_are_finished_with_their_task(journal):
    accept(journal, "a", key="k")
    journal.record_alias("b", "a", "echo", "k", b"c2", finished=False)
    journal.commit()

    journal.record_finished("a", "done", b"r", None, None, "w", 1)
    journal.record_aliases_finished("a")
    journal.commit()

    assert journal.load_unfinished() == []
    assert journal.answers(["a"])["a"].result == b"r"
    assert journal.answers(["b"])["b"].alias_of == "a"


def test_answer_for_key_is_the_canonical_task_not_an_alias(journal):
    accept(journal, "a", key="k")
    journal.record_alias("b", "a", "echo", "k", b"c2", finished=False)
    journal.commit()

    assert journal.answer_for_key("k").id == "a"
    assert journal.answer_for_key("other") is None


def test_answers_see_finishes_buffered_in_this_loop_turn(journal):
    accept(journal, "a", key="k")
    journal.commit()

    journal.record_finished("a", "done", b"r", None, None, "w", 2)

    answer = journal.answers(["a"])["a"]
    assert (answer.state, answer.result, answer.worker, answer.attempts) == ("done", b"r", "w", 2)
    assert journal.answer_for_key("k").finished


def test_a_finished_task_keeps_its_answer_and_drops_its_payload(journal):
    accept(journal, "ok")
    accept(journal, "bad")
    journal.commit()
    journal.record_finished("ok", "done", b"result", None, None, "w1", 2)
    journal.record_finished("bad", "failed", None, "boom", "handler_error", "w1", 1)
    journal.commit()

    answers = journal.answers(["ok", "bad", "never"])

    assert set(answers) == {"ok", "bad"}
    ok, bad = answers["ok"], answers["bad"]
    assert (ok.state, ok.result, ok.worker, ok.attempts, ok.finished) == (
        "done",
        b"result",
        "w1",
        2,
        True,
    )
    assert (bad.state, bad.error, bad.code) == ("failed", "boom", "handler_error")
    row = journal._db.execute("SELECT payload FROM tasks WHERE id='ok'").fetchone()
    assert row == (None,)


def test_answers_handle_more_ids_than_one_sql_statement_takes(journal):
    for i in range(2000):
        accept(journal, f"t-{i}")
    journal.commit()

    assert len(journal.answers(f"t-{i}" for i in range(2500))) == 2000


def test_a_dead_letter_keeps_its_payload_and_requeue_resets_it(journal):
    accept(journal, "d")
    journal.commit()
    journal.record_finished("d", "dead", None, "worker lost", "dead_letter", None, 4)
    journal.commit()

    (letter,) = journal.dead_letters()
    assert (letter.id, letter.payload, letter.attempts) == ("d", b"d", 4)
    assert journal.dead_letter_summaries() == [
        {"id": "d", "service": "echo", "error": "worker lost", "attempts": 4}
    ]
    assert journal.count_dead() == 1
    assert journal.dead_letters(["other"]) == []

    journal.record_requeued("d", b"c9")
    journal.commit()

    assert journal.dead_letters() == []
    (again,) = journal.load_unfinished()
    assert (again.id, again.attempts, again.client, again.payload) == ("d", 0, b"c9", b"d")
    assert journal.answers(["d"])["d"].error is None


def test_purge_forgets_expired_answers_and_aliases_but_keeps_dead_letters_and_pending(
    journal, clock
):
    for task_id in ("done", "failed", "dead", "pending"):
        accept(journal, task_id, key=f"k-{task_id}")
    journal.record_alias("alias", "done", "echo", "k-done", b"c2", finished=True)
    journal.commit()
    journal.record_finished("done", "done", b"r", None, None, "w", 1)
    journal.record_finished("failed", "failed", None, "e", "handler_error", "w", 1)
    journal.record_finished("dead", "dead", None, "lost", "dead_letter", None, 6)
    journal.commit()

    clock.now += 3600
    assert journal.purge(older_than_s=3600) == 0  # not expired yet: an hour to the second
    clock.now += 1
    purged = journal.purge(older_than_s=3600)

    assert purged == 3
    assert set(journal.answers(["done", "failed", "alias", "dead", "pending"])) == {
        "dead",
        "pending",
    }
    assert [d.id for d in journal.dead_letters()] == ["dead"]
    assert [t.id for t in journal.load_unfinished()] == ["pending"]


def test_purge_forgets_an_alias_whose_task_was_purged(journal, clock):
    accept(journal, "a", key="k")
    journal.commit()
    journal.record_finished("a", "done", b"r", None, None, "w", 1)
    journal.commit()
    clock.now += 7200
    journal.record_alias("b", "a", "echo", "k", b"c2", finished=True)  # joined two hours later
    journal.commit()

    journal.purge(older_than_s=3600)

    assert journal.answers(["a", "b"]) == {}


def test_an_in_memory_journal_works_for_tests_and_throwaway_runs():
    journal = Journal(":memory:", sync="normal")
    accept(journal, "t-1")
    journal.commit()
    assert [t.id for t in journal.load_unfinished()] == ["t-1"]
    journal.close()


# ------------------------------------------------ tasks journaled finished


@dataclass
class Held:
    """What the broker passes to record_finished_new (its TaskEntry's fields)."""

    id: str
    service: str = "echo"
    key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b"in"
    retries: int = 3
    attempts: int = 1
    client: bytes = b"c1"


def test_a_task_journaled_finished_is_one_row_with_its_answer_and_no_payload(journal, path):
    journal.record_finished_new(Held("t-1", key="k"), "done", b"out", None, None, "w1")
    journal.commit()

    reader = Journal(path)
    answer = reader.answers(["t-1"])["t-1"]
    assert (answer.state, answer.result, answer.worker, answer.attempts) == (
        "done",
        b"out",
        "w1",
        1,
    )
    assert reader.answer_for_key("k").id == "t-1"
    assert reader.load_unfinished() == []
    assert reader._db.execute("SELECT payload FROM tasks").fetchall() == [(None,)]


def test_reads_see_a_task_journaled_finished_before_the_commit(journal):
    journal.record_finished_new(Held("t-1", key="k"), "failed", None, "boom", "handler_error", "w")

    assert journal.answers(["t-1"])["t-1"].error == "boom"
    assert journal.answer_for_key("k").state == "failed"
    journal.commit()
    assert journal.answers(["t-1"])["t-1"].state == "failed"


def test_a_task_journaled_as_a_dead_letter_keeps_its_payload_for_retry(journal):
    journal.record_finished_new(
        Held("t-1", payload=b"again", attempts=6), "dead", None, "lost", "dead_letter", None
    )
    journal.commit()

    (letter,) = journal.dead_letters(["t-1"])
    assert (letter.payload, letter.attempts) == (b"again", 6)


def test_only_a_commit_holding_pending_tasks_is_fsynced(journal):
    journal.record_finished_new(Held("t-1"), "done", b"out", None, None, "w1")
    journal.commit()
    assert journal._synchronous == "NORMAL"

    accept(journal, "t-2")
    journal.commit()
    assert journal._synchronous == "FULL"


def test_purge_deletes_at_most_its_limit_and_the_rest_on_the_next_call(journal, clock):
    for i in range(25):
        accept(journal, f"t-{i}")
    journal.commit()
    for i in range(25):
        journal.record_finished(f"t-{i}", "done", b"r", None, None, "w", 1)
    journal.commit()
    clock.now += 1

    assert journal.purge(older_than_s=0, limit=10) == 10
    assert journal.purge(older_than_s=0, limit=10) == 10
    assert journal.purge(older_than_s=0, limit=10) == 5
    assert journal.answers([f"t-{i}" for i in range(25)]) == {}


# ------------------------------------------------------------ the answer log


def test_a_keyless_task_journaled_finished_goes_to_the_answer_log_not_the_tasks_table(
    journal, path
):
    journal.record_finished_new(Held("t-1"), "done", b"out", None, None, "w1")
    journal.record_finished_new(Held("t-2"), "failed", None, "boom", "handler_error", "w2")
    reader = Journal(path)

    assert reader.answers(["t-1", "t-2"]) == {}  # nothing before the commit
    journal.commit()

    found = reader.answers(["t-1", "t-2", "t-3"])
    assert (found["t-1"].state, found["t-1"].result, found["t-1"].worker) == ("done", b"out", "w1")
    assert (found["t-2"].state, found["t-2"].error, found["t-2"].code) == (
        "failed",
        "boom",
        "handler_error",
    )
    assert "t-3" not in found
    assert reader._db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    assert reader._db.execute("SELECT count(*) FROM answer_log").fetchone() == (1,)  # one row


def test_reads_see_a_logged_answer_before_the_commit(journal):
    journal.record_finished_new(Held("t-1"), "done", b"out", None, None, "w1")

    assert journal.answers(["t-1"])["t-1"].result == b"out"


def test_purge_drops_expired_answer_log_rows_whole_with_their_ids(journal, clock):
    for turn in range(3):
        for i in range(3):
            journal.record_finished_new(Held(f"t-{turn}-{i}"), "done", b"r", None, None, "w")
        journal.commit()  # one log row of three answers per commit
    ids = [f"t-{turn}-{i}" for turn in range(3) for i in range(3)]
    clock.now += 1

    assert journal.purge(older_than_s=3600) == 0  # not expired yet
    assert journal.purge(older_than_s=0, limit=2) == 3  # a whole row, past the limit
    assert len(journal.answers(ids)) == 6
    assert journal.purge(older_than_s=0, limit=10) == 6
    assert journal.answers(ids) == {}
    assert journal._db.execute("SELECT count(*) FROM answer_ids").fetchone() == (0,)


# ---------------------------------------------------------- schema version


def user_version(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_new_journal_records_its_schema_version(journal, path):
    assert user_version(path) == SCHEMA_VERSION == 1


def test_a_journal_of_an_unknown_schema_version_is_refused_untouched(path):
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")

    with pytest.raises(JournalVersionError, match=r"schema version 99.*reads version 1 only"):
        Journal(path)

    assert user_version(path) == 99
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_a_journal_from_before_schema_versions_opens_with_its_tasks_and_is_marked(journal, path):
    accept(journal, "t-1")
    journal.commit()
    journal.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=0")  # as every journal was before versions

    again = Journal(path)

    assert [t.id for t in again.load_unfinished()] == ["t-1"]
    assert user_version(path) == SCHEMA_VERSION
