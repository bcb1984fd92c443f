"""ZmqflowExecutor: the scheduler hands task instances to zmqflow workers.

Set ``AIRFLOW__CORE__EXECUTOR=zmqflow_provider.executors.ZmqflowExecutor``
and run worker-airflow replicas (``zmqflow worker --service airflow.default
--handler zmqflow_provider.executors.worker:run_workload``). Settings:
``[zmqflow_executor]`` (``settings.ExecutorSettings``).

Contract, for Airflow 3.3's BaseExecutor:

- ``_process_workloads``: each ExecuteTask goes to the fabric service of its
  queue (``airflow.<queue>``), under the id the scheduler pre-assigned with
  QUEUED (``pre_assigns_external_executor_id``, as CeleryExecutor does) and
  the idempotency key of its task instance and try (``routing``). The
  payload is the workload without its token (``wire``).
- ``sync``: the fabric's answers become ``success`` or ``fail``; a workload
  that failed before any worker ran it (a queue nobody serves, a forwarder
  that did not accept it, a payload over the limit) also gets its reason
  written to the task instance's log, naming the queue and what was tried.
- ``try_adopt_task_instances``: a scheduler that restarts re-attaches to the
  workloads of the dead one by their external executor id (COLLECT): they
  finish once, their answers come here. Ids the forwarder never saw (the
  old scheduler died between QUEUED and sending) are handed back, and
  Airflow resets and queues them again.
- ``revoke_task``: forgets the workload; a worker that still gets it is
  refused by the Execution API (the task instance is no longer QUEUED).
- ``end`` / ``terminate``: stop after a bounded last chance for what was
  given to reach the forwarder; what never did fails (a new scheduler could
  not adopt it), nothing is left half-submitted.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.configuration import conf
from airflow.executors import workloads
from airflow.executors.base_executor import BaseExecutor

from zmqflow_provider.executors import routing, wire
from zmqflow_provider.executors.fabric import FabricLink, Outcome
from zmqflow_provider.executors.settings import SECTION, ExecutorSettings

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancekey import TaskInstanceKey

_log = logging.getLogger("zmqflow_provider.executors")


@dataclass(frozen=True, slots=True)
class _Handed:
    """A workload on the fabric: its task instance key and where its log goes."""

    key: TaskInstanceKey
    queue: str
    log_path: str | None


class ZmqflowExecutor(BaseExecutor):
    supports_ad_hoc_ti_run: bool = True
    pre_assigns_external_executor_id: ClassVar[bool] = True
    is_local: bool = False
    is_production: bool = True
    serve_logs: bool = False  # the workers write to the shared logs folder

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read (and checked) here: a bad setting stops the scheduler at start.
        self.settings = ExecutorSettings.from_lookup(
            lambda option: self.conf.get(SECTION, option, fallback=None)
        )
        self._link: FabricLink | None = None
        self._handed: dict[str, _Handed] = {}  # fabric task id -> its task instance
        self._ids: dict[TaskInstanceKey, str] = {}

    @property
    def link(self) -> FabricLink:
        if self._link is None:
            self.start()
        assert self._link is not None
        return self._link

    def start(self) -> None:
        if self._link is None:
            self._link = FabricLink(self.settings)
            self._link.start()
            self.log.info(
                "ZmqflowExecutor: forwarder %s, queues as fabric services %r",
                self.settings.frontend,
                self.settings.service_format,
            )

    # ------------------------------------------------------------ workloads
    def _process_workloads(self, workload_items: Sequence[workloads.All]) -> None:
        for workload in workload_items:
            if not isinstance(workload, workloads.ExecuteTask):
                raise ValueError(f"{type(self).__name__} cannot run {type(workload).__name__}")
            self._hand_over(workload)

    def _hand_over(self, workload: workloads.ExecuteTask) -> None:
        ti = workload.ti
        key = ti.key
        self.queued_tasks.pop(key, None)
        queue = ti.queue or "default"
        task_id = ti.external_executor_id or str(uuid.uuid4())
        self.running.add(key)
        handed = _Handed(key, queue, workload.log_path)
        try:
            service = routing.service_for(self.settings.service_format, queue)
        except routing.UnroutableQueue as exc:
            self._failed(handed, str(exc))
            return
        payload = wire.to_wire(workload.model_dump(mode="json"))
        if len(payload) > self.settings.max_payload_bytes:
            self._failed(
                handed,
                f"queue {queue!r}: the workload is {len(payload):,} bytes, over the "
                f"forwarder's payload limit of {self.settings.max_payload_bytes:,} bytes "
                f"([{SECTION}] max_payload_bytes); nothing was sent",
            )
            return
        self._handed[task_id] = handed
        self._ids[key] = task_id
        self.link.submit(
            task_id,
            queue,
            service,
            payload,
            routing.idempotency_key(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number),
        )

    def sync(self) -> None:
        if self._link is None:
            return
        for outcome in self._link.outcomes():
            self._settle(outcome)

    def _settle(self, outcome: Outcome) -> None:
        handed = self._handed.pop(outcome.task_id, None)
        if handed is None:
            return  # revoked meanwhile
        self._ids.pop(handed.key, None)
        if outcome.ok:
            self.success(handed.key, outcome.detail)
            return
        ran = outcome.worker is not None  # a worker ran it: the task wrote its own log
        self._failed(handed, outcome.detail, write_log=not ran)

    def _failed(self, handed: _Handed, why: str, *, write_log: bool = True) -> None:
        self.log.error("task instance %s failed on the fabric: %s", handed.key, why)
        if write_log:
            self._write_task_log(handed, why)
        self.fail(handed.key, why)

    def _write_task_log(self, handed: _Handed, why: str) -> None:
        """The reason in the task instance's own log (the UI and REST API show it):
        a JSON line as the task SDK writes them, in the shared logs folder."""
        if not handed.log_path:
            return
        path = Path(conf.get("logging", "base_log_folder")) / handed.log_path
        line = {
            "timestamp": datetime.now(UTC).isoformat(),
            "level": "error",
            "event": f"ZmqflowExecutor: {why}",
            "logger": "zmqflow_provider.executors",
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as exc:
            self.log.warning("could not write the task log %s: %s", path, exc)

    # ---------------------------------------------------- restart, revoke, stop
    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        with_id = [ti for ti in tis if ti.external_executor_id]
        not_adopted = [ti for ti in tis if not ti.external_executor_id]
        if not with_id:
            return tis
        unknown = self.link.adopt(ti.external_executor_id for ti in with_id)
        routes: dict[str, tuple[str, str]] = {}
        adopted = []
        for ti in with_id:
            task_id = ti.external_executor_id
            if task_id in unknown:
                not_adopted.append(ti)
                continue
            queue = ti.queue or "default"
            try:
                service = routing.service_for(self.settings.service_format, queue)
            except routing.UnroutableQueue:
                service = "?"
            self._handed[task_id] = _Handed(ti.key, queue, None)
            self._ids[ti.key] = task_id
            self.running.add(ti.key)
            routes[task_id] = (queue, service)
            adopted.append(str(ti))
        if routes:
            self.link.collect(routes)
            self.log.info(
                "Adopted %d task instances from the fabric:\n\t%s",
                len(adopted),
                "\n\t".join(adopted),
            )
        return not_adopted

    def revoke_task(self, *, ti: TaskInstance) -> None:
        task_id = self._ids.pop(ti.key, None)
        if task_id is not None:
            self._handed.pop(task_id, None)
            if self._link is not None:
                self._link.forget(task_id)
        self.running.discard(ti.key)
        self.queued_tasks.pop(ti.key, None)

    def end(self) -> None:
        self._stop(timeout=5.0)

    def terminate(self) -> None:
        self._stop(timeout=1.0)

    def _stop(self, timeout: float) -> None:
        if self._link is None:
            return
        unsent = self._link.close(timeout)
        for outcome in self._link.outcomes():
            self._settle(outcome)
        for task_id in unsent:
            handed = self._handed.pop(task_id, None)
            if handed is not None:
                self._failed(
                    handed,
                    f"queue {handed.queue!r}: the scheduler stopped before the forwarder at "
                    f"{self.settings.frontend} accepted the workload",
                )
        self._link = None
