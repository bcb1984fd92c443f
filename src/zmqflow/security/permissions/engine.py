"""The permission rules: what each key name may do, answered one question at a time.

Contract: ``Permissions`` holds, per key name (an allow-list file's name
without ``.key``), the grants of its own entry and of its groups, and
answers each question the forwarder asks with a ``Decision``: allowed or
not, and the rule that decided (the grant with its file and line, the
owner rule, the admin grant, or the default deny). Nothing is allowed that
no grant allows once a file is given; ``Permissions.open()`` (no file) allows
everything, as the forwarder did before permissions existed.

Questions (services are task service names; topics and subscription
prefixes are written without the ``<env>.`` the bus puts in front, see
``topic_kind`` and ``subscription_kind``):

- ``may_submit(key, service)``: SUBMIT a task to it;
- ``may_serve(key, service)``: a worker offering it in READY;
- ``may_publish(key, topic)``, ``may_subscribe(key, prefix)``: the event
  bus (a subscription is a prefix: allowed only if every topic it would
  receive is, see patterns.py);
- ``may_collect(key, service, owner)``: the answer of a task ``owner``
  submitted: the owner itself, or a key granted ``collect`` on the service;
- ``may_retry(key, service, owner)``: RETRY of a dead letter: admin, or
  allowed to submit to its service and to collect it;
- ``is_admin(key)``: every dead letter, RETRY of any, the full STATUS;
  ``sees_all(key)``: the full STATUS (``status`` or ``admin``);
  ``may_see(key, service)``: a service shown in a filtered STATUS (any
  grant on it).

Decisions are cached per question (the broker asks the same ones for every
message); a ``Permissions`` is never changed, a reload makes a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from zmqflow.security.permissions.patterns import Pattern

Right = Literal["submit", "serve", "publish", "subscribe", "collect"]
RIGHTS: tuple[Right, ...] = ("submit", "serve", "publish", "subscribe", "collect")
Flag = Literal["status", "admin"]
FLAGS: tuple[Flag, ...] = ("status", "admin")
_FLAG_WORDS = {"status": "see the full STATUS", "admin": "administer (every dead letter, RETRY)"}
_CACHE_LIMIT = 50_000  # decisions kept; topics are chosen by peers, so it is bounded


@dataclass(frozen=True, slots=True)
class Grant:
    """One pattern (or flag) of one entry: ``keys.airflow`` or ``groups.clients``."""

    right: str
    pattern: Pattern | None  # None for the flags (status, admin)
    holder: str
    where: str  # "permissions.toml:12", or the file alone when the line is unknown

    def describe(self, key: str) -> str:
        via = "" if self.holder == f"keys.{key}" else f" (key {key!r} is in {self.holder})"
        what = f"{self.right} {self.pattern.text!r}" if self.pattern else f"{self.right} = true"
        return f"{self.holder}: {what}{via} at {self.where}"


@dataclass(frozen=True, slots=True)
class Decision:
    """An answer and what decided it.

    ``kind`` is a stable label (for metrics): ``grant``, ``owner``, ``admin``,
    ``deny`` (nothing granted it) or ``open`` (no permissions file).
    ``rule`` says it for people and logs; ``reason()`` is a refusal's text.
    """

    allowed: bool
    right: str
    key: str
    name: str
    kind: str
    rule: str

    def __bool__(self) -> bool:
        return self.allowed

    def reason(self) -> str:
        target = f" {self.name!r}" if self.name else ""
        verdict = "may" if self.allowed else "may not"
        what = _FLAG_WORDS.get(self.right, self.right)
        return f"key {self.key!r} {verdict} {what}{target}: {self.rule}"


@dataclass(frozen=True, slots=True)
class KeyRights:
    """Every grant one key has, its groups' included, in file order."""

    grants: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)
    groups: tuple[str, ...] = ()

    def of(self, right: str) -> tuple[Grant, ...]:
        return self.grants.get(right, ())


def topic_kind(env: str, topic: str) -> str | None:
    """A bus topic without its ``<env>.``; None when it is not under this env."""
    prefix = env + "."
    return topic[len(prefix) :] if topic.startswith(prefix) else None


def subscription_kind(env: str, prefix: str) -> str | None:
    """A subscription prefix as seen below ``<env>.``: '' when it takes in the
    whole env (``dev.``, ``de``, ``''``: the bus carries only this env's
    topics), None when it lies outside it."""
    env_prefix = env + "."
    if env_prefix.startswith(prefix):
        return ""
    return prefix[len(env_prefix) :] if prefix.startswith(env_prefix) else None


class Permissions:
    def __init__(
        self,
        keys: Mapping[str, KeyRights],
        source: str,
        groups: tuple[str, ...] = (),
        enforcing: bool = True,
    ) -> None:
        self.keys = dict(keys)
        self.source = source
        self.groups = groups
        self.enforcing = enforcing
        self._cache: dict[tuple[str, str, str], Decision] = {}

    @classmethod
    def open(cls) -> Permissions:
        """No permissions file: everything allowed (with a warning at start, by the caller)."""
        return cls({}, "", enforcing=False)

    def __repr__(self) -> str:
        if not self.enforcing:
            return "Permissions.open()"
        return f"<Permissions from {self.source}: {len(self.keys)} keys>"

    # ------------------------------------------------------------ questions
    def may_submit(self, key: str, service: str) -> Decision:
        cached = self._cache.get(("submit", key, service))  # the hot path: one lookup
        return (
            cached if cached is not None else self._decide("submit", key, service, Pattern.matches)
        )

    def may_serve(self, key: str, service: str) -> Decision:
        cached = self._cache.get(("serve", key, service))  # the hot path: one lookup
        return (
            cached if cached is not None else self._decide("serve", key, service, Pattern.matches)
        )

    def may_publish(self, key: str, topic: str) -> Decision:
        cached = self._cache.get(("publish", key, topic))  # the hot path: one lookup
        return (
            cached if cached is not None else self._decide("publish", key, topic, Pattern.matches)
        )

    def may_subscribe(self, key: str, prefix: str) -> Decision:
        return self._decide("subscribe", key, prefix, Pattern.covers_prefix)

    def may_collect(self, key: str, service: str, owner: str | None) -> Decision:
        if not self.enforcing:
            return self._open("collect", key, service)
        if owner is not None and owner == key:
            return Decision(True, "collect", key, service, "owner", "its own task")
        decision = self._decide("collect", key, service, Pattern.matches)
        if decision.allowed or owner is None:
            return decision
        return Decision(
            False, "collect", key, service, "deny", f"a task of key {owner!r}; {decision.rule}"
        )

    def may_retry(self, key: str, service: str, owner: str | None) -> Decision:
        admin = self.is_admin(key)
        if admin.allowed:
            return Decision(True, "retry", key, service, admin.kind, admin.rule)
        submit = self.may_submit(key, service)
        if not submit.allowed:
            return submit
        return self.may_collect(key, service, owner)

    def is_admin(self, key: str) -> Decision:
        return self._flag("admin", key)

    def sees_all(self, key: str) -> Decision:
        """The full STATUS: every worker, queue and dead letter."""
        admin = self.is_admin(key)
        return admin if admin.allowed else self._flag("status", key)

    def may_see(self, key: str, service: str) -> Decision:
        """A service (its queue, workers, dead letters) in a filtered STATUS."""
        seen = self.sees_all(key)
        if seen.allowed:
            return seen
        for right in ("submit", "serve", "collect"):
            decision = self._decide(right, key, service, Pattern.matches)
            if decision.allowed:
                return decision
        return Decision(False, "see", key, service, "deny", "no grant on it (deny by default)")

    # ------------------------------------------------------------ the rule
    def _decide(self, right: str, key: str, name: str, test) -> Decision:  # type: ignore[no-untyped-def]
        cache_key = (right, key, name)
        decision = self._cache.get(cache_key)
        if decision is not None:
            return decision
        rights = self.keys.get(key)
        if not self.enforcing:
            decision = self._open(right, key, name)
        elif rights is None:
            decision = Decision(
                False,
                right,
                key,
                name,
                "deny",
                f"no entry for it in {self.source} (deny by default)",
            )
        else:
            decision = next(
                (
                    Decision(True, right, key, name, "grant", grant.describe(key))
                    for grant in rights.of(right)
                    if grant.pattern is not None and test(grant.pattern, name)
                ),
                None,
            ) or Decision(
                False,
                right,
                key,
                name,
                "deny",
                f"no {right} grant of its matches (deny by default, {self.source})",
            )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[cache_key] = decision
        return decision

    def _flag(self, flag: str, key: str) -> Decision:
        if not self.enforcing:
            return self._open(flag, key, "")
        rights = self.keys.get(key)
        grants = rights.of(flag) if rights is not None else ()
        if grants:
            return Decision(True, flag, key, "", "grant", grants[0].describe(key))
        return Decision(
            False, flag, key, "", "deny", f"not granted {flag} in {self.source} (deny by default)"
        )

    @staticmethod
    def _open(right: str, key: str, name: str) -> Decision:
        return Decision(True, right, key, name, "open", "no permissions file: everything allowed")
