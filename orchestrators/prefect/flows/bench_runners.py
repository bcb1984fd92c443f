"""Flow of `make bench-prefect-runner`: 1,000 small tasks, the task runner given by the caller.

Contract: ``bench_runners(n)`` maps ``small`` over ``range(n)`` and returns the
sum of the results (``expected(n)``) and its flow run id, whatever task runner it is given with
``with_options(task_runner=...)``. The module is importable by name on the
processes that run the tasks (Dask workers, zmqflow replicas): its folder is
on their PYTHONPATH.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.runtime import flow_run


@task(name="small")
def small(i: int) -> int:
    return (i * i) % 1009


def expected(n: int) -> int:
    return sum((i * i) % 1009 for i in range(n))


@flow(name="zmqflow-bench-runners")
def bench_runners(n: int = 1000) -> tuple[int, str]:
    return sum(small.map(range(n)).result()), str(flow_run.id)
