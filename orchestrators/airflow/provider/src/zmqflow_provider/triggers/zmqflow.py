"""Triggers: wait for a submission's answers; fire on events from the bus.

Contract:
- ``ZmqflowResultsTrigger`` runs in the triggerer. It COLLECTs the ids
  ``<id_prefix>.0`` .. ``<id_prefix>.<count-1>`` from the forwarder with
  zmqflow's AsyncClient (finished answers come back stored, the others are
  routed to it as they finish), keeps them in item order, stores them
  (``zmqflow_provider.results``) and yields ONE event: ``status`` "done" with
  the results value, or "timeout" / "error" with a message saying what was
  missing. A restarted triggerer runs it again from the start: COLLECT is
  idempotent, so nothing runs twice.
- ``ZmqflowEventTrigger`` (a BaseEventTrigger, usable from an AssetWatcher)
  subscribes to ``<env>.<kind>`` on the event bus and yields one event per
  message whose topic is exactly that (or starts with it when
  ``prefix=True``), with the event's topic, kind, source, seq, ts and data.
  A message that does not decode is logged and skipped; the trigger stays up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio
from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from zmqflow import events
from zmqflow.client import ForwarderUnreachable
from zmqflow_provider import results
from zmqflow_provider.hooks.zmqflow import ZmqflowHook
from zmqflow_provider.keys import item_id

PROGRESS_EVERY_S = 10.0


class ZmqflowResultsTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        service: str,
        id_prefix: str,
        count: int,
        zmqflow_conn_id: str = ZmqflowHook.default_conn_name,
        timeout: float = 3600.0,
        results_path: str | None = None,
        inline_max_bytes: int = results.INLINE_MAX_BYTES,
        submitted_at: float | None = None,
        min_event_delay_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.submitted_at = submitted_at
        self.min_event_delay_s = min_event_delay_s
        self.service = service
        self.id_prefix = id_prefix
        self.count = count
        self.zmqflow_conn_id = zmqflow_conn_id
        self.timeout = timeout
        self.results_path = results_path
        self.inline_max_bytes = inline_max_bytes

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "service": self.service,
                "id_prefix": self.id_prefix,
                "count": self.count,
                "zmqflow_conn_id": self.zmqflow_conn_id,
                "timeout": self.timeout,
                "results_path": self.results_path,
                "inline_max_bytes": self.inline_max_bytes,
                "submitted_at": self.submitted_at,
                "min_event_delay_s": self.min_event_delay_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        try:
            payload = await self.collect()
        except Exception as exc:  # one event either way: the task decides what it means
            self.log.exception("collecting %s answers failed", self.count)
            payload = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
        # Airflow 3.3 race (apache/airflow#67287, #72716): an event that comes
        # before the scheduler drained the deferring process's exit makes it
        # fail the resumed task ("state mismatch"). Fast work waits a little.
        settle = self.min_event_delay_s - (time.monotonic() - started)
        if settle > 0:
            await asyncio.sleep(settle)
        yield TriggerEvent(payload)

    async def collect(self) -> dict[str, Any]:
        """Collect every answer; the event payload (also used by the blocking path)."""
        hook = ZmqflowHook(self.zmqflow_conn_id)
        client = await hook.async_client(timeout=self.timeout)
        ids = [item_id(self.id_prefix, i) for i in range(self.count)]
        index = {task_id: i for i, task_id in enumerate(ids)}
        raw: list[bytes | None] = [None] * self.count
        failed: dict[int, str] = {}
        workers: dict[str, int] = {}  # answers per worker id: who did the work
        cached = answered = 0  # cached: finished before we collected (stored answers)
        started = last_log = time.monotonic()
        try:
            await client.collect(ids)  # the client cuts the COLLECT to the frame limit
            try:
                async for answer in client.as_completed(self.timeout):
                    i = index[answer.task_id]
                    answered += 1
                    cached += answer.cached
                    if answer.worker:
                        workers[answer.worker] = workers.get(answer.worker, 0) + 1
                    if answer.ok:
                        raw[i] = answer.payload
                    else:
                        failed[i] = f"{answer.code}: {answer.error}"
                    if time.monotonic() - last_log >= PROGRESS_EVERY_S:
                        last_log = time.monotonic()
                        self.log.info("%d of %d answers so far", answered, self.count)
            except (TimeoutError, ForwarderUnreachable):
                return {
                    "status": "timeout",
                    "message": f"{self.count - answered} of {self.count} {self.service!r} items "
                    f"still unanswered after {self.timeout:.0f} s "
                    f"(forwarder {client.endpoint}, ids {self.id_prefix}.N)",
                }
        finally:
            client.close()
        # wall time from the first SUBMIT to the last answer: the fabric's share
        fabric_s = None if self.submitted_at is None else round(time.time() - self.submitted_at, 3)
        self.log.info(
            "%d answers (%d failed, %d finished before collected) in %.2f s",
            answered,
            len(failed),
            cached,
            time.monotonic() - started,
        )
        # Binary output anywhere: base64 for all, so one encoding describes the set.
        try:
            outputs: list[str | None] = [None if r is None else r.decode("utf-8") for r in raw]
            encoding = "utf-8"
        except UnicodeDecodeError:
            outputs = [None if r is None else results.to_base64(r) for r in raw]
            encoding = "base64"
        value = await asyncio.to_thread(
            results.store,
            service=self.service,
            outputs=outputs,
            failed=failed,
            cached=cached,
            workers=workers,
            encoding=encoding,
            path=self.results_path,
            inline_max_bytes=self.inline_max_bytes,
        )
        value["fabric_s"] = fabric_s
        return {"status": "done", "results": value}


class ZmqflowEventTrigger(BaseEventTrigger):
    def __init__(
        self,
        *,
        kind: str,
        zmqflow_conn_id: str = ZmqflowHook.default_conn_name,
        env: str | None = None,
        prefix: bool = False,
    ) -> None:
        super().__init__()
        if not kind or kind.startswith("."):
            raise ValueError("kind must be a non-empty event kind such as 'data.ready'")
        self.kind = kind
        self.zmqflow_conn_id = zmqflow_conn_id
        self.env = env
        self.prefix = prefix

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kind": self.kind,
                "zmqflow_conn_id": self.zmqflow_conn_id,
                "env": self.env,
                "prefix": self.prefix,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ZmqflowHook(self.zmqflow_conn_id)
        endpoints, keys = await hook.aendpoints(), await hook.acurve()
        topic = f"{self.env or endpoints.env}.{self.kind}"
        sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
        sock.linger = 0
        if keys is not None:
            keys.apply(sock)
        sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        sock.connect(endpoints.events_out)
        self.log.info("waiting for events %s on %s", topic, endpoints.events_out)
        try:
            while True:
                frames = await sock.recv_multipart()
                try:
                    event = events.decode(frames)
                except (ValueError, UnicodeDecodeError, TypeError) as exc:
                    self.log.warning("skipping an event that does not decode: %s", exc)
                    continue
                if event.topic != topic and not (self.prefix and event.topic.startswith(topic)):
                    continue  # SUB matches prefixes: "x.data.ready" also gets "x.data.readyish"
                yield TriggerEvent(
                    {
                        "topic": event.topic,
                        "kind": event.topic.split(".", 1)[1],
                        "source": event.source,
                        "seq": event.seq,
                        "ts": event.ts,
                        "data": event.data,
                    }
                )
        finally:
            sock.close(linger=0)
