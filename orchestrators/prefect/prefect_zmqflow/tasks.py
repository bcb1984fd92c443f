"""Prefect tasks that hand a whole batch of items to a zmqflow service.

Contract: ``submit_batch`` is ONE Prefect task per batch (not per item): it
connects through the block (``ZmqflowCredentials.connect``: retried, then a
clear error), runs ``batch.run_batch`` and returns its ``ItemAnswer`` list.
Its cache key is built from the service and the items' idempotency keys
only, and its result is persisted: a rerun of a crashed flow reads finished
batches back from result storage instead of running them, and a batch that
was in flight when the flow died is resubmitted under the same keys, so the
forwarder answers what already finished from its journal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from prefect_zmqflow.batch import ItemAnswer, run_batch
from prefect_zmqflow.credentials import ZmqflowCredentials

# The forwarder keeps finished answers for an hour (result_ttl_s): a cached
# batch older than that could not be collected again anyway.
CACHE_EXPIRATION = timedelta(hours=1)


def batch_cache_key(_context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same service and the same item keys: the same batch, whatever the payload objects."""
    digest = hashlib.sha256(str(parameters["service"]).encode())
    for key in parameters["keys"]:
        digest.update(b"\0" + key.encode())
    return f"zmqflow-batch-{digest.hexdigest()}"


@task(
    name="zmqflow-submit-batch",
    cache_key_fn=batch_cache_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def submit_batch(
    credentials: ZmqflowCredentials,
    service: str,
    payloads: Sequence[bytes],
    keys: Sequence[str],
    return_failures: bool = False,
) -> list[ItemAnswer]:
    """Run ``service`` on every payload through the fabric; one answer per item."""
    logger = get_run_logger()
    with credentials.connect() as client:
        answers = run_batch(
            client,
            service,
            payloads,
            keys,
            return_failures=return_failures,
            timeout_s=credentials.timeout_s,
        )
    cached = sum(a.cached for a in answers)
    failed = sum(not a.ok for a in answers)
    logger.info(
        "%s: %d items answered (%d from the forwarder's journal, %d failed)",
        service,
        len(answers),
        cached,
        failed,
    )
    return answers
