"""Instructions per task of each zmqflow hop's Python work, counted by valgrind.

CPU time on these shared machines moves by 30% from one run to the next;
instruction counts from ``valgrind --tool=callgrind`` do not (the same
figure to within 0.3% run after run). This is the figure to compare code
changes by. What it leaves out: sockets, the kernel (SQLite's WAL writes),
threads waiting on each other, and caches shared with other processes.

Three parts, each run without sockets on messages made beforehand:
- forwarder: SUBMIT of 50 new tasks, dispatch, the worker's RESULT, the
  journal commit, and the client's RESULT encoded (``Broker`` and ``Journal``);
- client: the tasks made and SUBMIT encoded, then the RESULT decoded into
  ``TaskResult``s (``ClientSession``, as ``Client.stream`` uses it);
- worker: TASK decoded, the echo handler run, RESULT encoded (the Python
  worker's methods, without its handler-thread hop).

Each part runs twice, with 100 and with 400 batches of 50 tasks; the
difference over 15,000 tasks is the count per task (start-up cancels out).

    .venv/bin/python scripts/instructions_per_task.py [PART ...]   (PART: forwarder,
    forwarder-metrics, client, worker, worker-metrics; all when none)

``forwarder-metrics`` and ``worker-metrics`` are those parts with metrics on
(what ``--metrics-port`` adds: forwarder/metrics.py's Recorder in the loop,
worker_metrics.py's per-thread counts around each handler run).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

from rich.console import Console
from rich.table import Table

BATCH = 50
BATCHES = 400  # messages made beforehand; a run uses the first N of them
RUNS = (100, 400)


def forwarder(batches: int, metrics: bool = False) -> None:
    from zmqflow import protocol as p
    from zmqflow.client.session import ClientSession
    from zmqflow.forwarder.broker import Broker, Limits
    from zmqflow.journal import Journal

    journal = Journal(os.path.join(tempfile.mkdtemp(), "journal.db"))
    broker = Broker(journal, Limits(journal_defer_s=3600), forwarder_id="f")
    broker.task_events = False
    commit = journal.commit
    if metrics:  # what --metrics-port turns on in the loop (metrics.serve, less the server)
        from zmqflow.forwarder.metrics import Recorder

        recorder = broker.stats = Recorder()

        def commit() -> None:
            recorder.commit(journal)

    ready = p.Ready("w1", "python", ["echo"], 1000, [], "1", 1, "host")
    broker.on_worker(b"w1", p.encode(ready), 0.0)
    session = ClientSession()
    submits, results = [], []
    for _ in range(BATCHES):
        tasks = session.new_tasks("echo", [b"x" * 100] * BATCH)
        submits.append(session.submit_frames(tasks)[0])
        results.append(p.encode(p.WorkerResults([p.Done(t.id, t.payload) for t in tasks])))
    for n in range(batches):
        broker.on_client(b"c1", submits[n])
        broker.dispatch()
        broker.outbox_workers.take()
        broker.journal_due()
        commit()
        broker.outbox_clients.take()
        broker.on_worker(b"w1", results[n], 1.0)
        broker.dispatch()
        broker.outbox_workers.take()
        broker.journal_due()
        commit()
        broker.outbox_clients.take()
    assert not broker.tasks


def forwarder_metrics(batches: int) -> None:
    """The forwarder part with metrics on (``--metrics-port``): the loop's counting."""
    forwarder(batches, metrics=True)


def client(batches: int) -> None:
    from zmqflow import protocol as p
    from zmqflow.client import session as session_module
    from zmqflow.client.ids import new_id

    ordered = [new_id() for _ in range(BATCHES * BATCH)]
    ids = iter(ordered)
    results = [
        p.encode(
            p.Results([p.Result(i, "w1", 1, False, b"x" * 100) for i in ordered[k : k + BATCH]])
        )
        for k in range(0, len(ordered), BATCH)
    ]
    session = session_module.ClientSession()
    answered = 0
    for n in range(batches):
        batch = [p.Task(next(ids), "echo", b"x" * 100, fresh=True) for _ in range(BATCH)]
        session.submit_frames(batch)
        session.on_message(results[n])
        while session.ready:
            session.ready.popleft()
            answered += 1
    assert answered == batches * BATCH


def worker(batches: int, metrics: bool = False) -> None:
    from zmqflow import protocol as p
    from zmqflow.client.ids import new_id
    from zmqflow.handlers import BUILTIN
    from zmqflow.settings import WorkerSettings
    from zmqflow.worker import Worker

    class Sink:  # stands in for the socket
        def send(self, *args: object, **kwargs: object) -> None:
            pass

    settings = WorkerSettings(connect="tcp://127.0.0.1:1", concurrency=1, worker_id="w")
    runner = Worker(settings, {"echo": BUILTIN["echo"]})
    runner._sock = Sink()  # type: ignore[assignment]
    stats = None
    if metrics:  # what --metrics-port adds to a handler thread (worker_metrics.py)
        from zmqflow.worker_metrics import WorkerMetrics

        stats = WorkerMetrics("w", "1").for_thread(runner._run_handler)
    messages = [
        p.encode(p.Tasks([p.Dispatch(new_id(), "echo", {}, 1, b"x" * 100) for _ in range(BATCH)]))
        for _ in range(BATCHES)
    ]
    for n in range(batches):
        runner._take_tasks(messages[n])
        while not runner._todo.empty():
            job = runner._todo.get_nowait()
            assert job is not None
            if stats is None:  # as Worker._handler_thread runs a job
                runner._done.put(runner._run_handler(*job))
            else:
                runner._done.put(stats.timed(job))
        runner._send_answers()


def worker_metrics(batches: int) -> None:
    """The worker part with metrics on: each handler run counted and timed."""
    worker(batches, metrics=True)


PARTS = {
    "forwarder": forwarder,
    "forwarder-metrics": forwarder_metrics,
    "client": client,
    "worker": worker,
    "worker-metrics": worker_metrics,
}


def count(part: str, batches: int) -> int:
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--run",
            part,
            str(batches),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main(parts: list[str]) -> None:
    console = Console()
    table = Table("part", "instructions per task", title="zmqflow: instructions per task")
    for part in parts or list(PARTS):
        with console.status(f"{part}: two runs under valgrind (about a minute)"):
            few, many = (count(part, n) for n in RUNS)
        per_task = (many - few) / ((RUNS[1] - RUNS[0]) * BATCH)
        table.add_row(part, f"{per_task:,.0f}")
    console.print(table)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        PARTS[sys.argv[2]](int(sys.argv[3]))
    else:
        main(sys.argv[1:])
