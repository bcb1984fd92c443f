"""Operators: run work items on a zmqflow service; publish an event.

Contract of ``ZmqflowSubmitOperator``:
- ``payloads`` (a sequence of bytes/str, or a callable taking the task
  context and returning an iterable of them, so that large inputs are made
  inside the task rather than stored in XCom) become one task each for
  ``service``. Each item gets an idempotency key derived from (dag_id,
  run_id, task_id, map_index, item index): a retried or cleared task
  instance gets the stored answers of items already done, never runs them
  again.
- The forwarder unreachable at submission: retried with tenacity's
  exponential backoff (``connect_attempts``), then the task fails with a
  message naming the endpoint, the attempts and the time spent.
  Items refused (unknown service, too large...): the task fails saying so.
- Deferrable by default: once every item is ACCEPTED the task defers to
  ``ZmqflowResultsTrigger`` and holds no worker slot while the fabric works.
  ``deferrable=False`` collects in the task itself.
- Returns (XCom) the results value of ``zmqflow_provider.results``: answers
  in item order, inline when small, else a file on the shared volume with
  its path. Failed items fail the task with their errors listed, unless
  ``fail_on_item_error=False``: then they are returned under ``failed``.

``ZmqflowPublishEventOperator`` publishes one event ``<env>.<kind>`` with
``data`` (templated) and returns its topic, source and seq.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator, Context
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from zmqflow import protocol as p
from zmqflow.client import Client, ForwarderUnreachable, TaskResult
from zmqflow_provider import results
from zmqflow_provider.hooks.zmqflow import ZmqflowHook
from zmqflow_provider.keys import Scope, id_prefix, item_id, item_key
from zmqflow_provider.triggers.zmqflow import ZmqflowResultsTrigger

Payloads = Sequence[bytes | str] | Callable[[Context], Iterable[bytes | str]]
ERRORS_LISTED = 20  # failed items named in the task's error message


class ZmqflowSubmitOperator(BaseOperator):
    template_fields: Sequence[str] = ("service", "zmqflow_conn_id")
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        service: str,
        payloads: Payloads,
        zmqflow_conn_id: str = ZmqflowHook.default_conn_name,
        deferrable: bool = True,
        timeout_s: float = 3600.0,
        accept_timeout_s: float = 30.0,
        connect_attempts: int = 5,
        fail_on_item_error: bool = True,
        results_dir: str = results.DEFAULT_DIR,
        inline_max_bytes: int = results.INLINE_MAX_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.payloads = payloads
        self.zmqflow_conn_id = zmqflow_conn_id
        self.deferrable = deferrable
        self.timeout_s = timeout_s
        self.accept_timeout_s = accept_timeout_s
        self.connect_attempts = connect_attempts
        self.fail_on_item_error = fail_on_item_error
        self.results_dir = results_dir
        self.inline_max_bytes = inline_max_bytes

    # ------------------------------------------------------------ submit
    def _payload_bytes(self, context: Context) -> list[bytes]:
        source = self.payloads(context) if callable(self.payloads) else self.payloads
        return [x.encode() if isinstance(x, str) else bytes(x) for x in source]

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        scope = Scope(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        payloads = self._payload_bytes(context)
        prefix = id_prefix(scope, ti.try_number)
        hook = ZmqflowHook(self.zmqflow_conn_id)
        started, submitted_at = time.monotonic(), time.time()
        self._submit(hook, scope, prefix, payloads)
        self.log.info(
            "%d items for %r accepted in %.2f s (ids %s.N, keys %sN)",
            len(payloads),
            self.service,
            time.monotonic() - started,
            prefix,
            scope.key_prefix(),
        )
        trigger = ZmqflowResultsTrigger(
            service=self.service,
            id_prefix=prefix,
            count=len(payloads),
            zmqflow_conn_id=self.zmqflow_conn_id,
            timeout=self.timeout_s,
            results_path=results.default_path(
                self.results_dir, ti.dag_id, ti.run_id, ti.task_id, ti.map_index
            ),
            inline_max_bytes=self.inline_max_bytes,
            submitted_at=submitted_at,
        )
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout_s + 60),
            )
        return self.execute_complete(context, asyncio.run(trigger.collect()))

    def _submit(self, hook: ZmqflowHook, scope: Scope, prefix: str, payloads: list[bytes]) -> None:
        endpoint = hook.endpoints().frontend
        tasks = [
            p.Task(item_id(prefix, i), self.service, payload, item_key(scope, i), {}, None, True)
            for i, payload in enumerate(payloads)
        ]
        attempts = 0
        started = time.monotonic()

        def attempt() -> None:
            nonlocal attempts, tasks
            attempts += 1
            if attempts > 1:
                # A second attempt re-sends the same ids, not fresh: the forwarder
                # then finds those it already took and creates no second task.
                tasks = [_not_fresh(t) for t in tasks]
            with hook.client(timeout=self.accept_timeout_s) as client:
                refused = _submit_and_wait(client, tasks)
            if refused:
                _raise_refused(self.service, endpoint, refused)

        retrying = Retrying(
            retry=retry_if_exception_type(ForwarderUnreachable),
            stop=stop_after_attempt(self.connect_attempts),
            wait=wait_exponential(multiplier=1, min=1, max=20),
            before_sleep=lambda state: self.log.warning(
                "forwarder at %s unreachable (attempt %d of %d): %s; retrying",
                endpoint,
                state.attempt_number,
                self.connect_attempts,
                state.outcome.exception() if state.outcome else "?",
            ),
        )
        try:
            retrying(attempt)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise AirflowException(
                f"could not submit {len(payloads)} {self.service!r} items: the zmqflow forwarder "
                f"at {endpoint} (connection {self.zmqflow_conn_id!r}) did not accept them in "
                f"{attempts} attempts over {time.monotonic() - started:.0f} s, each waiting "
                f"{self.accept_timeout_s:.0f} s, with exponential backoff; last error: {last}"
            ) from None

    # ---------------------------------------------------------- complete
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "done":
            raise AirflowException(f"zmqflow {self.service!r}: {event.get('message', event)}")
        value = event["results"]
        failed = value["failed"]
        self.log.info(
            "%d %r answers, %d failed, %d stored before collected%s",
            value["count"],
            self.service,
            len(failed),
            value["cached"],
            f", stored at {value['path']}" if "path" in value else "",
        )
        if failed and self.fail_on_item_error:
            listed = "; ".join(f"item {i}: {e}" for i, e in list(failed.items())[:ERRORS_LISTED])
            more = (
                "" if len(failed) <= ERRORS_LISTED else f" (and {len(failed) - ERRORS_LISTED} more)"
            )
            raise AirflowException(
                f"{len(failed)} of {value['count']} {self.service!r} items failed: {listed}{more}"
            )
        return value


def _not_fresh(task: p.Task) -> p.Task:
    return p.Task(task.id, task.service, task.payload, task.key, task.headers, task.retries, False)


def _submit_and_wait(client: Client, tasks: list[p.Task]) -> list[TaskResult]:
    """SUBMIT tasks with ids we chose (the trigger names them from a prefix);
    wait until each is ACCEPTED or refused. Returns the refusals.

    The client cuts the SUBMITs and the forwarder its ACCEPTED to fit the
    protocol's limits, so any number of items goes in one call.
    """
    client.submit_tasks(tasks, wait_accepted=True)
    return [r for r in client.session.ready if r.refused]


def _raise_refused(service: str, endpoint: str, refused: list[TaskResult]) -> None:
    codes = {r.code for r in refused}
    if "unknown_service" in codes:
        raise AirflowException(
            f"service {service!r} is unknown to the zmqflow forwarder at {endpoint}: no worker "
            f"has announced it ({len(refused)} items refused: {refused[0].error})"
        )
    sample = "; ".join(f"{r.task_id}: {r.code}: {r.error}" for r in refused[:ERRORS_LISTED])
    raise AirflowException(f"the forwarder refused {len(refused)} {service!r} items: {sample}")


class ZmqflowPublishEventOperator(BaseOperator):
    template_fields: Sequence[str] = ("kind", "data", "zmqflow_conn_id")
    ui_color = "#f2e6d9"

    def __init__(
        self,
        *,
        kind: str,
        data: dict[str, Any] | None = None,
        zmqflow_conn_id: str = ZmqflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.data = data or {}
        self.zmqflow_conn_id = zmqflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        sent = ZmqflowHook(self.zmqflow_conn_id).publish(self.kind, dict(self.data))
        self.log.info(
            "published %s (source %s, seq %d)", sent["topic"], sent["source"], sent["seq"]
        )
        return sent
