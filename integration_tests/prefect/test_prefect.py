"""Prefect 3 on the fabric, against the real stack: server on PostgreSQL,
process worker, deploy one-shot, event bridge, forwarder, Python and Rust
workers (compose project zmqflow-it-prefect).

Each fan-out run rolls up the example data set (zmqflow.examples.sales:
1,000,000 rows as 10,000 `rollup` items) in 20 batches; its artifact must
equal the single-process reference. Runs use
their own ``namespace`` so that no run is served by another's cache.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from integration_tests.harness import wait_for
from integration_tests.prefect.harness import BusRecorder, PrefectStack, RunOutcome

FANOUT = "zmqflow-fanout/fanout"
ARTIFACT = "zmqflow-fanout-result"
pytestmark = pytest.mark.timeout(900)


def run_in_background(
    stack: PrefectStack, params: dict[str, Any]
) -> tuple[threading.Thread, list[RunOutcome]]:
    outcome: list[RunOutcome] = []
    thread = threading.Thread(
        target=lambda: outcome.append(stack.run_deployment(FANOUT, params)), daemon=True
    )
    thread.start()
    return thread, outcome


def check_artifact(stack: PrefectStack, flow_run_id: str, reference: dict[str, Any]) -> None:
    result, artifact_run = stack.artifact_json(ARTIFACT)
    assert artifact_run == flow_run_id
    assert result == reference


@pytest.fixture(scope="module")
def first_fanout(prefect_stack: PrefectStack) -> tuple[RunOutcome, BusRecorder]:
    """One plain fan-out run, watched by a subscriber on the bus."""
    with BusRecorder(prefect_stack.events_out, "dev.prefect.flow-run.") as recorder:
        outcome = prefect_stack.run_deployment(
            FANOUT, {"namespace": f"plain-{uuid.uuid4().hex[:8]}"}
        )
        run_id = outcome.flow_run_id if outcome.returncode == 0 else ""
        # the bridge relays Completed a moment after the server records it
        if run_id:
            wait_for(lambda: "Completed" in recorder.states_of(run_id), 30, "Completed on the bus")
    return outcome, recorder


def test_fanout_deployment_completes_with_the_single_process_result(
    prefect_stack: PrefectStack,
    first_fanout: tuple[RunOutcome, BusRecorder],
    reference_result: dict[str, Any],
) -> None:
    outcome, _ = first_fanout
    assert outcome.returncode == 0, outcome.output
    assert reference_result["rows"] == 1_000_000 and reference_result["items"] >= 10_000
    check_artifact(prefect_stack, outcome.flow_run_id, reference_result)
    batches = [
        t
        for t in prefect_stack.task_runs(outcome.flow_run_id)
        if t["name"].startswith("rollup-batch")
    ]
    assert len(batches) == -(-reference_result["items"] // 500)  # one Prefect task per batch
    assert {t["state_type"] for t in batches} == {"COMPLETED"}


def test_a_bus_subscriber_sees_the_fanout_flow_run_states(
    first_fanout: tuple[RunOutcome, BusRecorder],
) -> None:
    outcome, recorder = first_fanout
    assert outcome.returncode == 0, outcome.output
    states = recorder.states_of(outcome.flow_run_id)
    # the bridge relays Prefect's event stream, whose order is not guaranteed
    assert {"Running", "Completed"} <= set(states), states
    events = [e for e in recorder.received if e.data.get("id") == outcome.flow_run_id]
    assert {e.topic for e in events} >= {
        "dev.prefect.flow-run.running",
        "dev.prefect.flow-run.completed",
    }
    assert all(e.data.get("flow") == "zmqflow-fanout" for e in events)


def test_fanout_survives_a_python_and_a_rust_worker_sigkilled_mid_run(
    prefect_stack: PrefectStack,
    reference_result: dict[str, Any],
) -> None:
    assert len(prefect_stack.containers("worker-python")) == 2
    assert len(prefect_stack.containers("worker-rust")) == 2
    before = prefect_stack.counters()
    thread, outcome = run_in_background(
        prefect_stack, {"namespace": f"kill-workers-{uuid.uuid4().hex[:8]}"}
    )
    # mid-run: a fifth of the items answered
    wait_for(
        lambda: prefect_stack.counters()["completed"] - before["completed"] >= 2_000,
        300, "2,000 items answered", every=0.5,
    )  # fmt: skip
    victims = [
        prefect_stack.containers("worker-python")[0],
        prefect_stack.containers("worker-rust")[0],
    ]
    for victim in victims:
        victim.kill(signal="SIGKILL")
    thread.join(600)
    assert outcome and outcome[0].returncode == 0, outcome and outcome[0].output
    check_artifact(prefect_stack, outcome[0].flow_run_id, reference_result)
    after = prefect_stack.counters()
    print(f"workers killed: {[v.name for v in victims]}; forwarder counters over the run:",
          {k: after[k] - before[k] for k in after if after[k] != before.get(k)})  # fmt: skip
    assert after["workers_lost"] - before["workers_lost"] >= 2
    assert after["completed"] - before["completed"] == reference_result["items"]
    # back to 2 + 2 for whatever runs next
    prefect_stack.scale({"worker-python": 2, "worker-rust": 2})


def test_rerun_after_prefect_worker_sigkill_skips_finished_batches_with_the_same_result(
    prefect_stack: PrefectStack,
    reference_result: dict[str, Any],
) -> None:
    namespace = f"crash-{uuid.uuid4().hex[:8]}"
    items = reference_result["items"]
    before = prefect_stack.counters()
    started = prefect_stack.run_deployment(FANOUT, {"namespace": namespace}, watch=False)
    assert started.returncode == 0, started.output
    first_run = started.flow_run_id

    def four_or_more_finished_batches() -> int | None:
        done = sum(
            t["state_type"] == "COMPLETED" and t["name"].startswith("rollup-batch")
            for t in prefect_stack.task_runs(first_run)
        )
        return done if done >= 4 else None

    done_before_kill = wait_for(four_or_more_finished_batches, 300, "4 finished batches", 0.5)
    worker = prefect_stack.container("prefect-worker")
    worker.kill(signal="SIGKILL")
    assert prefect_stack.flow_run(first_run)["state_type"] == "RUNNING"  # killed mid-run
    at_kill = prefect_stack.counters()
    worker.start()  # `docker kill` leaves it stopped: the restart policy does not apply
    prefect_stack.wait_healthy(worker)

    rerun = prefect_stack.run_deployment(FANOUT, {"namespace": namespace})
    assert rerun.returncode == 0, rerun.output
    check_artifact(prefect_stack, rerun.flow_run_id, reference_result)
    after = prefect_stack.counters()

    batches = [
        t
        for t in prefect_stack.task_runs(rerun.flow_run_id)
        if t["name"].startswith("rollup-batch")
    ]
    cached = [t for t in batches if t["state_name"] == "Cached"]
    print(f"{done_before_kill} batches finished before the kill; rerun: {len(cached)} of "
          f"{len(batches)} batches Cached; accepted by the forwarder: "
          f"{at_kill['accepted'] - before['accepted']} before the kill, "
          f"{after['accepted'] - at_kill['accepted']} after; items {items}")  # fmt: skip
    assert len(cached) >= done_before_kill, [(t["name"], t["state_name"]) for t in batches]
    # Every item became a forwarder task exactly once over both runs: finished
    # batches were not submitted again, and items submitted before the kill
    # were answered from the journal by their idempotency keys.
    assert after["accepted"] - before["accepted"] == items
    assert after["completed"] - before["completed"] == items
    assert after["accepted"] - at_kill["accepted"] <= items - 500 * done_before_kill


def test_data_ready_published_on_the_bus_starts_an_on_event_run_that_completes(
    prefect_stack: PrefectStack,
) -> None:
    marker = uuid.uuid4().hex
    prefect_stack.publish("data.ready", {"items": 20, "seed": 7, "marker": marker})

    def our_run() -> dict[str, Any] | None:
        runs = prefect_stack.api(
            "POST", "/flow_runs/filter", {"flows": {"name": {"any_": ["zmqflow-on-event"]}}}
        )
        ours = [r for r in runs if (r["parameters"].get("data") or {}).get("marker") == marker]
        return (
            ours[0]
            if ours and ours[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
            else None
        )

    run = wait_for(our_run, 180, "a finished zmqflow-on-event run for our event", every=2)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["data"] == {"items": 20, "seed": 7, "marker": marker}


# Bad input: each case runs a small flow inside the prefect-worker container,
# against the real server and fabric, and prints what the task raised.
BAD_INPUT_FLOW = """
import json, sys
from prefect import flow
from prefect_zmqflow import ZmqflowCredentials, submit_batch

CASE = sys.argv[1]
GOOD_CSV = b"region,product,quantity,unit_price_cents\\neu,widget,2,100\\n"
BAD_CSV = b"region,product,quantity,unit_price_cents\\neu,widget,lots,100\\n"

@flow(name="zmqflow-bad-input")
def bad_input() -> dict:
    fabric = ZmqflowCredentials.load("fabric")
    keys = [f"bad-input-{CASE}-{sys.argv[2]}-{i}" for i in range(3)]
    if CASE == "nowhere":
        fabric = ZmqflowCredentials(frontend="tcp://no-such-host.invalid:5555",
                                    connect_attempts=3, probe_timeout_s=0.5)
        payloads, service, ret = [GOOD_CSV] * 3, "rollup", False
    elif CASE == "unknown-service":
        payloads, service, ret = [GOOD_CSV] * 3, "no-such-service", False
    else:
        payloads, service, ret = [GOOD_CSV, BAD_CSV, GOOD_CSV], "rollup", CASE == "return-failures"
    answers = submit_batch(fabric, service, payloads, keys, return_failures=ret)
    return {"answers": [[a.ok, a.error] for a in answers]}

try:
    outcome = {"ok": True, **bad_input()}
except Exception as exc:
    outcome = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
print("OUTCOME " + json.dumps(outcome), flush=True)
"""


def run_bad_input(stack: PrefectStack, case: str) -> dict[str, Any]:
    worker = stack.container("prefect-worker")
    code, out = worker.exec_run(["python", "-c", BAD_INPUT_FLOW, case, uuid.uuid4().hex[:8]])
    assert code == 0, out.decode()
    # stdout and stderr come mixed: Prefect's log lines may follow the outcome
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("OUTCOME ")]
    assert len(lines) == 1, out.decode()
    return json.loads(lines[0].removeprefix("OUTCOME "))


def test_a_block_pointing_nowhere_is_retried_then_fails_saying_what_it_tried(
    prefect_stack: PrefectStack,
) -> None:
    outcome = run_bad_input(prefect_stack, "nowhere")
    assert outcome["ok"] is False and outcome["type"] == "ForwarderUnreachableError", outcome
    assert "tcp://no-such-host.invalid:5555" in outcome["error"]
    assert "3 STATUS probes" in outcome["error"], outcome["error"]


def test_an_unknown_service_fails_the_task_with_the_forwarders_refusal(
    prefect_stack: PrefectStack,
) -> None:
    outcome = run_bad_input(prefect_stack, "unknown-service")
    assert outcome["ok"] is False and outcome["type"] == "UnknownServiceError", outcome
    assert "'no-such-service'" in outcome["error"]


def test_failing_items_fail_the_task_with_their_errors(prefect_stack: PrefectStack) -> None:
    outcome = run_bad_input(prefect_stack, "fail")
    assert outcome["ok"] is False and outcome["type"] == "BatchFailedError", outcome
    assert "1 of 3 items failed in service 'rollup'" in outcome["error"]
    assert "rollup: line 2: quantity is not a non-negative integer" in outcome["error"]


def test_failing_items_come_back_with_their_errors_when_asked(prefect_stack: PrefectStack) -> None:
    outcome = run_bad_input(prefect_stack, "return-failures")
    assert outcome == {
        "ok": True,
        "answers": [
            [True, None],
            [False, "rollup: line 2: quantity is not a non-negative integer"],
            [True, None],
        ],
    }
