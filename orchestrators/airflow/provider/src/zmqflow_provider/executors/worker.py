"""The worker-airflow replica's handler: run one Airflow workload with the task SDK.

Run by the ordinary zmqflow worker in the Airflow image::

    zmqflow worker --connect tcp://forwarder:5556 --service airflow.default \\
        --handler zmqflow_provider.executors.worker:run_workload \\
        --concurrency 4 --credit 4

Contract: ``run_workload(payload, headers)`` runs the ExecuteTask workload
``payload`` (``wire.to_wire``: the workload's JSON without its token) to the
end and returns a JSON answer (``host``, ``exit_code``, ``seconds``, ``ti``);
a task that ends badly raises ``WorkloadFailed`` whose text names the task
instance, the host and the exit code, which the worker turns into FAILED.

- Each workload runs in a child process forked from a forkserver that has
  Airflow's task SDK imported already: the worker's own process has threads
  (sockets, handlers), and the SDK's supervisor forks the task process in
  turn, which is only safe from a single-threaded parent. This is what
  Celery's prefork pool gives its CeleryExecutor workers.
- The child mints the workload's token (``mint_token``: the same JWT the
  scheduler would make, from this installation's JWT secret, which every
  Airflow container holds) and calls ``BaseExecutor.run_workload``, so the
  task reports to the api-server's Execution API as under any executor. The
  token lives in the child's memory only: never on the wire, on disk or in a
  log line.
- The Execution API refuses to start a task instance that is not QUEUED: a
  workload redelivered after its first worker died mid-task (the forwarder
  requeues it) or revoked meanwhile fails here at once, and Airflow's own
  retry rules take over; a task instance never runs on two replicas at once.
- A worker's concurrency (``--concurrency``, with ``--credit`` equal to it)
  is its slot count: one workload per handler thread.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from zmqflow_provider.executors import wire

# Imported once in the forkserver, so every child starts with them loaded.
PRELOAD = [
    "airflow.configuration",
    "airflow.executors.workloads",
    "airflow.executors.base_executor",
    "airflow.sdk.execution_time.supervisor",
    "airflow.api_fastapi.auth.tokens",
    "zmqflow_provider.executors.worker",
]
_EXIT_SETUP = 3  # the child could not start the task (its message says why)

_context_lock = threading.Lock()
_context: Any = None


class WorkloadFailed(RuntimeError):
    """The workload's task instance did not end well; the text says where and how."""


def _forkserver() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


def run_workload(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    body = wire.from_wire(payload)  # BadWorkload: a clear FAILED, nothing started
    what = wire.label(body)
    host = socket.gethostname()
    ctx = _forkserver()
    reader, writer = ctx.Pipe(duplex=False)
    started = time.monotonic()
    child = ctx.Process(
        target=_child, args=(payload, writer), name=f"airflow-workload {body['ti']['id']}"
    )
    child.start()
    writer.close()  # the child holds its own end: EOF when it exits
    problem = _read_problem(reader)
    child.join()
    reader.close()
    code = child.exitcode
    if code != 0:
        reason = f": {problem}" if problem else ""
        raise WorkloadFailed(f"{what} on {host} ended with exit code {code}{reason}")
    answer = {
        "host": host,
        "exit_code": code,
        "seconds": round(time.monotonic() - started, 3),
        "ti": body["ti"]["id"],
    }
    return json.dumps(answer).encode()


def _read_problem(reader: multiprocessing.connection.Connection) -> str | None:
    try:
        return str(reader.recv())
    except (EOFError, OSError):
        return None


def mint_token(ti_id: str) -> str:
    """The workload token the scheduler would make for this task instance.

    As Airflow 3.3's BaseExecutor.jwt_generator and
    BaseWorkloadSchema.generate_token do: audience and lifetime from the
    ``[execution_api]`` and ``[scheduler] task_queued_timeout`` settings,
    signed with this installation's key (``[api_auth]``).
    """
    from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args
    from airflow.configuration import conf

    generator = JWTGenerator(
        valid_for=conf.getint("execution_api", "jwt_expiration_time"),
        audience=conf.get_mandatory_list_value("execution_api", "jwt_audience")[0],
        issuer=conf.get("api_auth", "jwt_issuer", fallback=None),
        **get_signing_args(make_secret_key_if_needed=False),
    )
    return generator.generate(
        extras={"sub": ti_id, "scope": "workload"},
        valid_for=conf.getfloat("scheduler", "task_queued_timeout"),
    )


def _describe(exc: Exception) -> str:
    """An error's text without the input values (pydantic's would show the token)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors(include_input=False, include_url=False)
        except TypeError:
            found = None
        if found:
            return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in found)
    return f"{type(exc).__name__}: {exc}"


def _child(payload: bytes, problems: multiprocessing.connection.Connection) -> None:
    """In the forked child: build the workload with a fresh token and run it."""
    try:
        from airflow.executors import workloads
        from pydantic import TypeAdapter

        body = wire.from_wire(payload)
        body[wire.TOKEN_FIELD] = mint_token(str(body["ti"]["id"]))
        workload = TypeAdapter(workloads.All).validate_python(body)
        del body
    except Exception as exc:  # said in the FAILED answer; the token is never in it
        problems.send(f"could not start the task: {_describe(exc)}")
        problems.close()
        os._exit(_EXIT_SETUP)
    from airflow.executors.base_executor import BaseExecutor

    try:
        code = BaseExecutor.run_workload(workload)
    except Exception as exc:  # e.g. the Execution API refusing a task instance not QUEUED
        problems.send(f"{type(exc).__name__}: {exc}")
        code = 1
    problems.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
