"""The items of the batched messages: one field table per item kind.

Contract: each batched command carries an array of items, each an array of
fields in the order of docs/protocol.md. That order, each field's wire type
and the rule a decoder applies to it are written once, in the ``ItemKind``
of the item (``SUBMIT_ITEM``, ``TASK_ITEM``, ``WORKER_RESULT_ITEM``,
``WORKER_FAILURE_ITEM``, ``RESULT_ITEM``, ``FAILURE_ITEM``); from it come:

- ``as_array``: an item object as its array (the encoders);
- ``usual``: the hot-path test of a whole batch of arrays (one loop per
  message, every field test inlined: generated from the table as
  dataclasses generates ``__init__``); an item that passes is decoded as
  it is;
- ``decode``: one item array as its object, checked field by field when it
  is not usual, raising ``ProtocolError`` that names the field (and carries
  the item's id when it can be read);
- ``builder``: a function of the fields, in order, giving the array (for
  senders on the hot path that hold no item object);
- ``positions``: where named fields stand in the array.

A field past the listed ones is ignored (a later revision may append
some); SUBMIT's ``fresh`` is such a later field (absent means false).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from zmqflow.limits import MAX_MAP_BYTES, uint, valid_id
from zmqflow.protocol.frames import ProtocolError, pack

# --------------------------------------------------------------- item classes


@dataclass(slots=True)
class SubmitItem:
    """One task as a client submits it (a SUBMIT item)."""

    id: str
    service: str
    payload: bytes = b""
    key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None
    # True only on a task's first SUBMIT: the forwarder then skips looking for
    # a stored answer under its id (docs/protocol.md, SUBMIT semantics 4)
    fresh: bool = False


@dataclass(slots=True)
class TaskItem:
    """One item of a TASK: a task as the forwarder hands it to a worker."""

    id: str
    service: str
    headers: dict[str, Any]
    attempt: int
    payload: bytes


@dataclass(slots=True)
class WorkerResultItem:
    """One item of a worker RESULT: the handler's output for a task."""

    id: str
    payload: bytes


@dataclass(slots=True)
class WorkerFailureItem:
    """One item of a worker FAILED: the handler's error text for a task."""

    id: str
    error: str


@dataclass(slots=True)
class ResultItem:
    """One item of a client RESULT: a task's answer and its payload."""

    id: str
    worker: str
    attempts: int
    cached: bool
    payload: bytes


@dataclass(slots=True)
class FailureItem:
    """One item of a client FAILED: a task that ended without a result."""

    id: str
    code: str
    error: str
    worker: str | None
    attempts: int


# --------------------------------------------------------------- field rules


def _headers_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "headers must be a map"
    if value and len(pack(value)) > MAX_MAP_BYTES:
        return "headers exceed 64 KiB once encoded"
    return None


# wire type -> (the usual test of ``v``, inlined on the hot path; the checked test)
_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("type(v) is str", lambda v: isinstance(v, str)),
    "bin": ("type(v) is bytes", lambda v: isinstance(v, bytes)),
    "map": ("type(v) is dict", lambda v: isinstance(v, dict)),
    "bool": ("type(v) is bool", lambda v: type(v) is bool),
    "uint": ("type(v) is int and v >= 0", uint),
    "str|nil": ("(v is None or type(v) is str)", lambda v: v is None or isinstance(v, str)),
    "uint|nil": ("(v is None or type(v) is int and v >= 0)", lambda v: v is None or uint(v)),
}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an item: its name, its wire type, and optionally a
    narrower usual test (``usual``, a Python expression of ``v``) and a
    checked rule with its own message (``problem``: the text, or None)."""

    name: str
    wire: str
    usual: str | None = None
    problem: Callable[[Any], str | None] | None = None

    @property
    def usual_test(self) -> str:
        return self.usual or _TYPES[self.wire][0]

    def check(self, kind: str, value: Any) -> str | None:
        if self.problem is not None:
            return self.problem(value)
        if _TYPES[self.wire][1](value):
            return None
        return f"{kind} item field {self.name!r} has the wrong type"


class ItemKind:
    """The field table of one item kind, and what comes from it."""

    def __init__(
        self, wire: str, cls: type, fields: Sequence[Field], later: Sequence[str] = ()
    ) -> None:
        self.wire = wire  # the command's name in messages: SUBMIT, TASK, RESULT, FAILED
        self.cls = cls
        self.fields = tuple(fields)
        self.count = len(self.fields)  # fields every item has; ``later`` ones may follow
        self.names = tuple(f.name for f in self.fields)
        assert self.names[0] == "id"
        self.as_array: Callable[[Any], tuple[Any, ...]] = attrgetter(*self.names, *later)
        self.usual: Callable[[Sequence[Any]], bool] = self._generate_usual()
        self.builder: Callable[..., list[Any]] = _generate(
            f"def build({', '.join(self.names)}):\n    return [{', '.join(self.names)}]\n",
            "build",
        )

    def positions(self, *names: str) -> tuple[int, ...]:
        return tuple(self.names.index(name) for name in names)

    def getter(self, **renamed: str) -> Callable[[Any], tuple[Any, ...]]:
        """The item's array from another object, some attributes named otherwise
        (``TASK_ITEM.getter(attempt="attempts")`` for the forwarder's task)."""
        return attrgetter(*(renamed.get(name, name) for name in self.names))

    def _generate_usual(self) -> Callable[[Sequence[Any]], bool]:
        tests = ["type(item) is list", f"len(item) >= {self.count}"]
        for i, f in enumerate(self.fields):
            tests.append(re.sub(r"\bv\b", f"item[{i}]", f.usual_test))
        source = (
            "def usual(items):\n"
            "    for item in items:\n"
            f"        if not ({' and '.join(tests)}):\n"
            "            return False\n"
            "    return True\n"
        )
        return _generate(source, "usual")

    def read(self, item: Any) -> Any:
        """An array that passed ``usual`` (or the checks) as its object."""
        return self.cls(*item[: self.count])

    def decode(self, item: Any) -> Any:
        """One item array as its object; ``ProtocolError`` naming what is wrong."""
        if self.usual((item,)):
            return self.read(item)
        if not isinstance(item, list) or len(item) < self.count:
            item_id = item[0] if isinstance(item, list) and item and valid_id(item[0]) else None
            raise ProtocolError(
                "malformed",
                f"{self.wire} item must be an array of at least {self.count} fields",
                [item_id] if item_id else None,
            )
        if not isinstance(item[0], str):
            raise ProtocolError("malformed", f"{self.wire} item id must be a string")
        for f, value in zip(self.fields[1:], item[1:], strict=False):
            problem = f.check(self.wire, value)
            if problem is not None:
                raise ProtocolError("malformed", problem, [item[0]])
        return self.read(item)


def _generate(source: str, name: str) -> Callable[..., Any]:
    scope: dict[str, Any] = {}
    exec(compile(source, f"<zmqflow.protocol {name}>", "exec"), scope)  # our own text
    return scope[name]


class _SubmitKind(ItemKind):
    """SUBMIT items end with ``fresh``, a later field: absent means false."""

    def read(self, item: Any) -> SubmitItem:
        return SubmitItem(*item[:6], is_fresh(item))


# ------------------------------------------------------------- the tables

SUBMIT_ITEM = _SubmitKind(
    "SUBMIT",
    SubmitItem,
    (
        Field("id", "str"),
        Field("service", "str"),
        Field("payload", "bin"),
        # the usual task: no key, no headers, no retries (the hot path's form)
        Field(
            "key",
            "str|nil",
            "v is None",
            lambda v: None if v is None or isinstance(v, str) else "key must be a string or nil",
        ),
        Field("headers", "map", "type(v) is dict and not v", _headers_problem),
        Field(
            "retries",
            "uint|nil",
            "v is None",
            lambda v: None if v is None or uint(v) else "retries must be a non-negative int or nil",
        ),
    ),
    later=("fresh",),
)
TASK_ITEM = ItemKind(
    "TASK",
    TaskItem,
    (
        Field("id", "str"),
        Field("service", "str"),
        Field("headers", "map"),
        Field("attempt", "uint"),
        Field("payload", "bin"),
    ),
)
WORKER_RESULT_ITEM = ItemKind(
    "RESULT", WorkerResultItem, (Field("id", "str"), Field("payload", "bin"))
)
WORKER_FAILURE_ITEM = ItemKind(
    "FAILED", WorkerFailureItem, (Field("id", "str"), Field("error", "str"))
)
RESULT_ITEM = ItemKind(
    "RESULT",
    ResultItem,
    (
        Field("id", "str"),
        Field("worker", "str"),
        Field("attempts", "uint"),
        Field("cached", "bool"),
        Field("payload", "bin"),
    ),
)
FAILURE_ITEM = ItemKind(
    "FAILED",
    FailureItem,
    (
        Field("id", "str"),
        Field("code", "str"),
        Field("error", "str"),
        Field("worker", "str|nil"),
        Field("attempts", "uint"),
    ),
)


def all_fresh(items: Sequence[list[Any]]) -> bool:
    """Every SUBMIT item's ``fresh`` flag is set: it came with a later revision
    of version 2, so absent means false, and only ``true`` is true."""
    for item in items:  # noqa: SIM110 (a loop: a generator costs a frame per item)
        if not (len(item) > 6 and item[6] is True):
            return False
    return True


def is_fresh(item: list[Any]) -> bool:
    """A SUBMIT item's ``fresh`` flag (``all_fresh`` of one item)."""
    return all_fresh((item,))


# The hot paths' names for the usual tests (a batch; the test of one item
# is the batch of that item), and the array builders of the forwarder's
# outboxes, which hold tasks, not item objects.
usual_tasks = SUBMIT_ITEM.usual
usual_dispatches = TASK_ITEM.usual
usual_dones = WORKER_RESULT_ITEM.usual
usual_results = RESULT_ITEM.usual
result_item = RESULT_ITEM.builder
failed_item = FAILURE_ITEM.builder
_task_of_entry = TASK_ITEM.getter(attempt="attempts")


def usual_task(item: Any) -> bool:
    return usual_tasks((item,))


def usual_dispatch(item: Any) -> bool:
    return usual_dispatches((item,))


def usual_done(item: Any) -> bool:
    return usual_dones((item,))


def usual_result(item: Any) -> bool:
    return usual_results((item,))


def dispatch_items(tasks: Sequence[Any]) -> list[tuple[Any, ...]]:
    """TASK items of the forwarder's tasks (objects with ``id``, ``service``,
    ``headers``, ``attempts``: the attempt this is, and ``payload``): one
    call for a batch."""
    return list(map(_task_of_entry, tasks))
