"""The permission rule engine: wildcards, deny by default, groups, the rule that decided."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqflow.security.permissions import (
    Pattern,
    Permissions,
    parse,
    subscription_kind,
    topic_kind,
)

STACKISH = """
[groups.demo-clients]
submit = ["echo", "sleep"]
publish = ["data.>"]

[groups.ops]
admin = true

[keys.airflow]
groups = ["demo-clients"]
submit = ["airflow.>"]
subscribe = ["data.>"]

[keys.host]
groups = ["demo-clients"]

[keys.reader]
collect = ["echo"]
status = true

[keys.root]
groups = ["ops"]

[keys.worker-rust]
serve = ["echo", "sleep"]
"""


@pytest.fixture
def rules() -> Permissions:
    return parse(STACKISH, "perm.toml")


# ------------------------------------------------------------- patterns
@pytest.mark.parametrize(
    ("pattern", "name", "matched"),
    [
        ("echo", "echo", True),
        ("echo", "echo2", False),
        ("echo", "echo.x", False),
        ("airflow.*", "airflow.default", True),
        ("airflow.*", "airflow.gpu.large", False),  # * is one segment
        ("airflow.*", "airflow", False),
        ("airflow.>", "airflow.gpu.large", True),  # > is one or more
        ("airflow.>", "airflow", False),
        ("airflow.**", "airflow.a.b", True),  # ** is >
        ("*.default", "airflow.default", True),
        (">", "anything.at.all", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a..c", False),  # an empty segment matches nothing
        ("data.>", "data.", False),
    ],
)
def test_wildcards_match_like_nats_subjects(pattern: str, name: str, matched: bool) -> None:
    assert Pattern.parse(pattern).matches(name) is matched


@pytest.mark.parametrize(
    "text", ["", "a..b", ".a", "a.", "a.b*", "a>.b", ">.a", "a.>.b", "a b", "**.x"]
)
def test_a_text_that_is_no_pattern_is_refused_saying_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        Pattern.parse(text)


@pytest.mark.parametrize(
    ("pattern", "prefix", "covered"),
    [
        ("data.>", "data.", True),
        ("data.>", "data.ready", True),  # every topic starting so is data.<something>
        ("data.>", "data", False),  # would also receive database.x
        ("data.>", "", False),
        (">", "", True),
        ("data.ready", "data.ready", False),  # would also receive data.ready2, data.ready.x
        ("*.>", "dat", False),
        ("*.>", "anything.", True),
        ("a.*.>", "a.b.", True),
        ("a.*.>", "a.b", False),
    ],
)
def test_a_subscription_prefix_is_covered_only_if_all_it_receives_is(
    pattern: str, prefix: str, covered: bool
) -> None:
    assert Pattern.parse(pattern).covers_prefix(prefix) is covered


segment = st.text(alphabet="abz09_-", min_size=1, max_size=4)
token = st.one_of(segment, st.just("*"))
patterns = st.builds(
    lambda toks, rest: ".".join([*toks, ">"] if rest else toks) or ">",
    st.lists(token, min_size=0, max_size=4),
    st.booleans(),
)
names = st.lists(segment, min_size=1, max_size=5).map(".".join)
prefixes = st.text(alphabet="abz.", max_size=8)


@given(patterns, prefixes, st.lists(st.text(alphabet="abz.", max_size=6), max_size=5))
@settings(max_examples=300, deadline=None)
def test_a_covered_prefix_only_ever_receives_matching_topics(
    pattern: str, prefix: str, suffixes: list[str]
) -> None:
    p = Pattern.parse(pattern)
    if not p.covers_prefix(prefix):
        return
    for suffix in suffixes:
        topic = prefix + suffix
        if all(topic.split(".")):  # a valid topic: no empty segment
            assert p.matches(topic), (pattern, prefix, topic)


@given(patterns, prefixes)
@settings(max_examples=300, deadline=None)
def test_an_uncovered_prefix_can_receive_a_topic_the_pattern_refuses(
    pattern: str, prefix: str
) -> None:
    p = Pattern.parse(pattern)
    if p.covers_prefix(prefix) or not all(prefix.split(".")[:-1]):
        return
    witnesses = [prefix + s for s in ("q", "qq", "q.q", "q.q.q.q.q.q")]
    assert any(not p.matches(w) for w in witnesses if all(w.split(".")))


@given(st.lists(segment, min_size=1, max_size=4), names)
def test_a_name_is_matched_by_its_own_literal_and_by_rest_wildcards(
    parts: list[str], other: str
) -> None:
    name = ".".join(parts)
    assert Pattern.parse(name).matches(name)
    assert Pattern.parse(">").matches(name)
    assert Pattern.parse(".".join(["*"] * len(parts))).matches(name)
    assert Pattern.parse(f"{parts[0]}.>").matches(name) is (len(parts) > 1)
    if other != name:
        assert not Pattern.parse(name).matches(other)


# ------------------------------------------------------------- decisions
def test_a_grant_allows_and_names_its_entry_and_line(rules: Permissions) -> None:
    d = rules.may_submit("airflow", "airflow.default")
    assert d.allowed and d.kind == "grant"
    assert "keys.airflow: submit 'airflow.>'" in d.rule
    assert "perm.toml:11" in d.rule  # the line of submit = ["airflow.>"]


def test_a_group_grant_names_the_group_and_the_key_in_it(rules: Permissions) -> None:
    d = rules.may_submit("host", "echo")
    assert d.allowed
    assert "groups.demo-clients: submit 'echo'" in d.rule and "key 'host'" in d.rule


def test_anything_not_granted_is_denied_by_default(rules: Permissions) -> None:
    d = rules.may_submit("host", "airflow.default")
    assert not d and d.kind == "deny" and "deny by default" in d.rule
    assert d.reason().startswith("key 'host' may not submit 'airflow.default'")
    assert not rules.may_serve("airflow", "echo")  # a client right is not a worker right
    assert not rules.may_submit("worker-rust", "echo")
    assert not rules.is_admin("airflow")


def test_a_key_without_an_entry_gets_nothing(rules: Permissions) -> None:
    for decision in (
        rules.may_submit("stranger", "echo"),
        rules.may_serve("stranger", "echo"),
        rules.may_publish("stranger", "data.x"),
        rules.may_subscribe("stranger", ""),
        rules.may_collect("stranger", "echo", "host"),
        rules.is_admin("stranger"),
    ):
        assert not decision and "deny by default" in decision.rule


def test_workers_serve_only_their_services(rules: Permissions) -> None:
    assert rules.may_serve("worker-rust", "echo")
    refusal = rules.may_serve("worker-rust", "airflow.default")
    assert not refusal and refusal.right == "serve" and refusal.name == "airflow.default"


def test_events_publish_and_subscribe_by_topic(rules: Permissions) -> None:
    assert rules.may_publish("host", "data.ready")
    assert not rules.may_publish("host", "pipeline.done")
    assert rules.may_subscribe("airflow", "data.ready")
    assert not rules.may_subscribe("airflow", "data")  # would receive database.*
    assert not rules.may_subscribe("host", "data.")  # publish is not subscribe


def test_answers_go_to_the_owner_or_a_key_granted_collect(rules: Permissions) -> None:
    own = rules.may_collect("host", "echo", "host")
    assert own and own.kind == "owner"
    other = rules.may_collect("airflow", "echo", "host")
    assert not other and "a task of key 'host'" in other.rule
    assert rules.may_collect("reader", "echo", "host").kind == "grant"
    assert not rules.may_collect("reader", "sleep", "host")
    assert not rules.may_collect("host", "echo", None)  # owner unknown: a grant is needed


def test_retry_needs_admin_or_submit_and_collect(rules: Permissions) -> None:
    assert rules.may_retry("root", "anything", "host")
    assert rules.may_retry("host", "echo", "host")
    assert not rules.may_retry("host", "echo", "airflow")  # not its task
    assert not rules.may_retry("reader", "echo", "host")  # may collect, not submit


def test_status_shows_everything_to_admins_and_status_keys_only(rules: Permissions) -> None:
    assert rules.sees_all("root") and rules.sees_all("reader")
    assert not rules.sees_all("host")
    assert rules.may_see("host", "echo") and not rules.may_see("host", "airflow.default")
    assert rules.may_see("worker-rust", "sleep")


def test_without_a_file_everything_is_allowed_and_says_so() -> None:
    rules = Permissions.open()
    assert not rules.enforcing
    for d in (
        rules.may_submit("x", "airflow.default"),
        rules.may_collect("x", "echo", "y"),
        rules.is_admin("x"),
        rules.may_subscribe("x", ""),
    ):
        assert d and d.kind == "open" and "no permissions file" in d.rule


def test_decisions_are_cached_and_the_same_each_time(rules: Permissions) -> None:
    first = rules.may_submit("host", "echo")
    assert rules.may_submit("host", "echo") is first


@given(st.sampled_from(["airflow", "host", "reader", "root", "worker-rust", "x"]), names)
def test_every_allowed_answer_names_a_grant_of_that_key(key: str, service: str) -> None:
    rules = parse(STACKISH, "perm.toml")
    for d in (rules.may_submit(key, service), rules.may_serve(key, service)):
        if d.allowed:
            assert d.kind == "grant" and "perm.toml:" in d.rule
            holder = d.rule.split(":")[0]
            assert holder == f"keys.{key}" or holder in {
                f"groups.{g}" for g in rules.keys[key].groups
            }
        else:
            assert d.kind == "deny"


@given(st.lists(st.sampled_from(["echo", "a.*", "a.>", "b.c"]), max_size=3), names)
def test_a_group_grants_its_members_exactly_what_it_would_grant_them_directly(
    submits: list[str], service: str
) -> None:
    listed = ", ".join(f'"{s}"' for s in submits)
    via_group = parse(f'[groups.g]\nsubmit = [{listed}]\n[keys.k]\ngroups = ["g"]\n')
    direct = parse(f"[keys.k]\nsubmit = [{listed}]\n")
    assert via_group.may_submit("k", service).allowed is direct.may_submit("k", service).allowed


def test_bus_topics_are_granted_without_the_env() -> None:
    assert topic_kind("dev", "dev.data.ready") == "data.ready"
    assert topic_kind("dev", "prod.data.ready") is None
    assert subscription_kind("dev", "dev.worker.") == "worker."
    assert subscription_kind("dev", "") == ""  # the whole env: the bus carries nothing else
    assert subscription_kind("dev", "de") == ""
    assert subscription_kind("dev", "prod.") is None
