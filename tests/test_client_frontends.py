"""Client and AsyncClient: the same scenarios through both front ends.

Both run ``zmqflow.client.core``'s operations; these tests hold them to one
contract against a real forwarder and worker on loopback. The asyncio client
is driven through ``Blocking``, which runs each coroutine (and each step of an
async iterator) on the test's event loop, so one test body serves both.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import zmq.asyncio
from fabric import Fabric

from zmqflow import AsyncClient, Client, Refused


class Blocking:
    """An AsyncClient seen through blocking calls: coroutines run to completion,
    async iterators advance one item per call (so tests can look between items)."""

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name in ("as_completed", "stream"):
            return lambda *a, **k: self._steps(attr(*a, **k))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._loop.run_until_complete(attr(*a, **k))
        return attr

    def _steps(self, iterator: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._loop.run_until_complete(iterator.__anext__())
            except StopAsyncIteration:
                return


@pytest.fixture
def running(fabric: Fabric) -> Fabric:
    fabric.start_forwarder()
    fabric.start_worker("echo", "sleep", "sha256", extra=("--concurrency", "4"))
    fabric.wait_workers(1)
    return fabric


@pytest.fixture(params=["blocking", "asyncio"])
def connect(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``connect(endpoint, **options)``: a client of the parametrized front end."""
    opened: list[Any] = []
    if request.param == "blocking":

        def make(endpoint: str, **options: Any) -> Any:
            opened.append(Client(endpoint, **options))
            return opened[-1]

        yield make
        for client in opened:
            client.close()
        return
    loop = asyncio.new_event_loop()
    ctx = zmq.asyncio.Context()

    def make_async(endpoint: str, **options: Any) -> Any:
        async def build() -> AsyncClient:
            return AsyncClient(endpoint, ctx=ctx, **options)

        opened.append(loop.run_until_complete(build()))
        return Blocking(opened[-1], loop)

    yield make_async
    for client in opened:
        client.close()
    ctx.term()
    loop.close()


def _client(fabric: Fabric, connect: Any, timeout: float = 30.0) -> Any:
    return connect(fabric.frontend, timeout=timeout, heartbeat_interval=fabric.heartbeat_interval)


def test_async_client_has_every_client_method_with_the_same_parameters() -> None:
    public = {n for n in dir(Client) if not n.startswith("_")}
    assert public <= set(dir(AsyncClient)), public - set(dir(AsyncClient))
    for name in public:
        ours, theirs = getattr(Client, name), getattr(AsyncClient, name)
        if callable(ours):
            assert inspect.signature(ours).parameters.keys() == (
                inspect.signature(theirs).parameters.keys()
            ), name


def test_map_answers_in_payload_order_and_leaves_other_answers_to_as_completed(
    running: Fabric, connect: Any
) -> None:
    client = _client(running, connect)
    earlier = client.submit_many("echo", [b"e1", b"e2"])

    results = client.map("sha256", [b"abc", b""])

    assert [r.payload for r in results] == [
        b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ]
    assert sorted(r.task_id for r in client.as_completed(10)) == sorted(earlier)


def test_submit_returns_once_accepted_and_result_brings_the_answer(
    running: Fabric, connect: Any
) -> None:
    client = _client(running, connect)

    task_id = client.submit("sleep", b"50", headers={"trace": "t-1"}, retries=2)
    assert client.session.is_accepted(task_id)
    result = client.result(task_id, timeout=10)

    assert (result.task_id, result.ok, result.payload) == (task_id, True, b"50")
    with pytest.raises(KeyError):
        client.result(task_id, timeout=1)  # surfaced once: no longer outstanding


def test_submit_to_an_unknown_service_raises_refused(running: Fabric, connect: Any) -> None:
    client = _client(running, connect)

    with pytest.raises(Refused) as refused:
        client.submit("nope", b"")

    assert refused.value.code == "unknown_service"
    assert not list(client.as_completed(1))  # the refusal surfaced once, as the exception


def test_stream_keeps_at_most_a_window_outstanding_and_answers_every_payload(
    running: Fabric, connect: Any
) -> None:
    client = _client(running, connect)
    outstanding: list[int] = []

    answers = []
    for result in client.stream("echo", (b"%d" % n for n in range(500)), window=40):
        outstanding.append(client.session.outstanding)
        answers.append(result.payload)

    assert sorted(answers) == sorted(b"%d" % n for n in range(500))
    assert max(outstanding) <= 40


def test_as_completed_raises_timeout_error_when_answers_are_late(
    running: Fabric, connect: Any
) -> None:
    client = _client(running, connect)
    client.submit("sleep", b"3000")

    with pytest.raises(TimeoutError):
        list(client.as_completed(0.3))


def test_status_shows_the_worker(running: Fabric, connect: Any) -> None:
    client = _client(running, connect)

    info = client.status(5)

    assert [w["services"] for w in info["workers"]] == [["echo", "sleep", "sha256"]]


def test_collect_follows_tasks_another_client_submitted(running: Fabric, connect: Any) -> None:
    submitter = _client(running, connect)
    ids = submitter.submit_many("sleep", [b"200", b"300"])
    submitter.close()

    follower = _client(running, connect)
    follower.collect(ids)

    answers = {r.task_id: r.payload for r in follower.as_completed(10)}
    assert answers == {ids[0]: b"200", ids[1]: b"300"}


def test_a_dead_letter_is_retried_and_its_answer_comes_to_the_retrying_client(
    fabric: Fabric, connect: Any
) -> None:
    fabric.start_forwarder()
    victim = fabric.start_worker("sleep")
    fabric.wait_workers(1)
    client = _client(fabric, connect)
    task_id = client.submit("sleep", b"5000", retries=0)
    fabric.wait_holding(victim)
    fabric.kill(victim)  # its only attempt dies with it
    assert client.result(task_id, timeout=10).code == "dead_letter"
    fabric.start_worker("sleep")

    assert client.retry_dead_letters([task_id]) == [task_id]

    again = client.result(task_id, timeout=20)
    assert again.ok and again.payload == b"5000"


def test_a_forwarder_restart_is_survived_and_every_answer_surfaces_once(
    running: Fabric, connect: Any
) -> None:
    client = _client(running, connect, timeout=60)
    ids = client.submit_many("sleep", [b"300"] * 20)
    assert running.forwarder is not None
    running.kill(running.forwarder, signal.SIGKILL)
    running.start_forwarder()  # on the same journal: accepted tasks come back

    answers = [r.task_id for r in client.as_completed(60)]

    assert sorted(answers) == sorted(ids)
