"""One batch of work items through the fabric, without Prefect.

Contract: ``run_batch`` submits every payload to ``service`` under its
idempotency key, in one go, and waits until each has its one answer; it
returns an ``ItemAnswer`` per item, in input order. A key the forwarder
already answered (an earlier, crashed run) is answered from its journal and
not run again (``cached``). A refusal raises: ``UnknownServiceError`` when no
worker ever offered the service, ``BatchRefusedError`` otherwise. Failed
items raise ``BatchFailedError`` with every error, unless
``return_failures`` is set: then they come back with ``ok=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefect_zmqflow.errors import BatchFailedError, BatchRefusedError, UnknownServiceError
from zmqflow.client import Client


@dataclass(slots=True, frozen=True)
class ItemAnswer:
    key: str
    ok: bool
    output: bytes
    error: str | None = None
    cached: bool = False  # answered from the forwarder's journal, not run again


def run_batch(
    client: Client,
    service: str,
    payloads: Sequence[bytes],
    keys: Sequence[str],
    *,
    return_failures: bool = False,
    timeout_s: float | None = None,
) -> list[ItemAnswer]:
    if len(payloads) != len(keys):
        raise ValueError(f"{len(payloads)} payloads but {len(keys)} keys")
    if len(set(keys)) != len(keys):
        raise ValueError("idempotency keys must be unique within a batch")
    ids = client.submit_many(service, payloads, keys=keys, wait_accepted=False)
    key_of = dict(zip(ids, keys, strict=True))
    by_key: dict[str, ItemAnswer] = {}
    refused: list[tuple[str, str, str]] = []
    for result in client.as_completed(timeout_s):
        key = key_of[result.task_id]
        if result.refused:
            refused.append((key, result.code or "", result.error or ""))
            continue
        by_key[key] = ItemAnswer(key, result.ok, result.payload, result.error, result.cached)
    if refused:
        codes = {code for _, code, _ in refused}
        key, code, reason = refused[0]
        if codes == {"unknown_service"}:
            raise UnknownServiceError(
                f"the forwarder at {client.endpoint} refused service {service!r}: {reason}"
            )
        raise BatchRefusedError(
            f"the forwarder at {client.endpoint} refused {len(refused)} of {len(keys)} items "
            f"of service {service!r} (codes {sorted(codes)}); first: {key}: {code}: {reason}"
        )
    answers = [by_key[k] for k in keys]
    failures = [(a.key, a.error or "failed") for a in answers if not a.ok]
    if failures and not return_failures:
        raise BatchFailedError(service, len(keys), failures)
    return answers
