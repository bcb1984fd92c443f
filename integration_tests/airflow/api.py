"""A small client of Airflow 3's REST API, as a user would drive it.

Contract: ``AirflowApi`` logs in with SimpleAuthManager (POST /auth/token),
triggers DAG runs (POST /api/v2/dags/{id}/dagRuns with logical_date null),
waits for them by polling (a probe with a deadline, never a bare sleep),
reads task instances and XComs, and clears task instances. Every failure
says which call and what Airflow answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

T = TypeVar("T")
FINISHED = {"success", "failed"}


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.http = requests.Session()
        self._token_at = 0.0

    def login(self) -> None:
        r = self.http.post(
            f"{self.base}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        assert r.status_code in (200, 201), f"POST /auth/token: {r.status_code} {r.text}"
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        self._token_at = time.monotonic()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if time.monotonic() - self._token_at > 600:  # tokens expire; renew well before
            self.login()
        r = self.http.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        assert r.ok, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json() if r.content else None

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dags/{dag_id}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._call(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        out = self._call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})
        return out["dag_runs"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones included (one per map index),
        page by page (the API gives at most [api] maximum_page_limit, 100, per call)."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._call(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(out)},
            )["task_instances"]
            out.extend(page)
            if len(page) < 100:
                return out

    def tries(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """Every try of one task instance (hostname, state, try_number), oldest first."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        out = self._call("GET", path)
        return sorted(out["task_instances"], key=lambda t: t["try_number"])

    def log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> str:
        """A try's task log as the UI reads it (GET .../logs/{try}), as text."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        params: dict[str, Any] = {"full_content": "true"}
        if map_index >= 0:
            params["map_index"] = map_index
        out = self._call("GET", path, params=params, headers={"Accept": "application/json"})
        content = out.get("content", out) if isinstance(out, dict) else out
        return content if isinstance(content, str) else json.dumps(content)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._call("GET", path, params={"deserialize": "true"})["value"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
            "include_downstream": True,
        }
        return self._call("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)

    def wait_finished(self, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """Wait until the run finishes, well or not; the run."""
        return wait_for(
            lambda: (r := self.run(dag_id, run_id)) and r["state"] in FINISHED and r,
            timeout,
            f"{dag_id} run {run_id} to finish",
            interval=1.0,
        )

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """Wait until the run finishes; fail with the task states when it does not succeed."""
        run = self.wait_finished(dag_id, run_id, timeout)
        if run["state"] != "success":
            states = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
            raise AssertionError(f"{dag_id} run {run_id} ended {run['state']}: tasks {states}")
        return run


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (requests.RequestException, AssertionError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}: {last_error}"
            )
        time.sleep(interval)
