"""Task ids and idempotency keys of a task instance's work items.

Contract: ``item_key(scope, i)`` is the same for every try of one task
instance (dag_id, run_id, task_id, map_index) and differs between task
instances and items, so the forwarder answers a retried or cleared task's
items from its stored results instead of running them again (protocol,
SUBMIT semantics 5). ``item_id(prefix, i)`` is unique per try (the prefix
holds the try number and random bits) and derivable from ``prefix`` and
``i`` alone, so a trigger collects 10,000 answers from a few bytes of
kwargs. Both fit the protocol's limits (ids: 64 bytes of [A-Za-z0-9._:-];
keys: 256 bytes of UTF-8).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

MAX_KEY_BYTES = 256
MAX_ID_BYTES = 64
_ID_CHARS = re.compile(r"^[A-Za-z0-9._:-]+$")


@dataclass(frozen=True, slots=True)
class Scope:
    """One task instance: what its items' keys are derived from."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @property
    def digest(self) -> str:
        text = "\x1f".join((self.dag_id, self.run_id, self.task_id, str(self.map_index)))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def key_prefix(self) -> str:
        readable = f"airflow/{self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}/"
        # Readable when it fits (with room for the item index), hashed otherwise.
        if len(readable.encode()) + 12 <= MAX_KEY_BYTES:
            return readable
        return f"airflow/{self.digest}/"


def item_key(scope: Scope, index: int) -> str:
    return f"{scope.key_prefix()}{index}"


def id_prefix(scope: Scope, try_number: int) -> str:
    """A fresh prefix for this try's ids: digest, try number, random bits."""
    prefix = f"af.{scope.digest}.{try_number}.{secrets.token_hex(4)}"
    assert _ID_CHARS.match(prefix)
    return prefix


def item_id(prefix: str, index: int) -> str:
    task_id = f"{prefix}.{index}"
    if len(task_id) > MAX_ID_BYTES or not _ID_CHARS.match(task_id):
        raise ValueError(f"task id {task_id!r} does not fit the protocol")
    return task_id
