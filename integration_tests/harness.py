"""One compose project from compose.yaml: what every integration test and the chaos suite start.

Contract: ``ComposeProject(project, services, ports=..., env=...)`` is one
Docker Compose project made from compose.yaml, started by testcontainers'
DockerCompose (Compose v2, ``up --wait``) and driven with the docker SDK.

- Its own project name and free host ports: the fabric's four published-port
  variables (``FABRIC_PORTS``) and any extra port variables the caller names
  (Airflow's ``AIRFLOW_PUBLISH_PORT``, Prefect's ``PREFECT_PUBLISH_PORT``)
  each get a free port, and ``ZMQFLOW_PUBLISH_HOST`` is 127.0.0.1. These
  variables (and ``env``) go to every compose command through ``env``, never
  into os.environ: two projects in one pytest session cannot see each
  other's ports, and a stack from ``make up`` (project ``zmqflow``) is left alone.
- ``up()`` takes down a project of the same name left by an interrupted run,
  starts ``services`` (and what they depend on; ``replicas`` of the services
  named there) and returns once every one is healthy; if that fails it
  prints the logs, takes the project down and raises.
  ``down()`` removes its containers, volumes and optional-profile services.
- Nothing is pulled: images are built by scripts/build-images.sh
  (``ensure_images``); Ryuk, which needs a registry image, is off.
- CURVE is on in compose.yaml, so this process holds keys (``host_keys``):
  one forwarder key pair and one client key pair made once per process in a
  temporary folder (never in the repository; removed at exit), exported as
  ZMQFLOW_CURVE_SECRET / ZMQFLOW_CURVE_SERVER, which every zmqflow Client,
  AsyncClient and CLI started from here reads. ``up()`` seeds every project's
  key volumes with them before the stack starts (the compose ``keys``
  one-shot keeps keys it finds), so all projects of one run share the
  forwarder key and the client key is in each allow-list from the start.
  ``curve_socket(kind)`` is a raw pyzmq socket holding the client key (bus
  probes); ``allow_client(public_key_file)`` copies a public key into the
  running project's allow-list volume, as ``make client-key`` does.
- Faults: ``kill``/``restart``/``containers``/``network`` (docker SDK);
  ``scale`` (``up --scale`` of the named services only, waiting until healthy).
- Probes, each with a deadline: ``status`` (the forwarder's STATUS, None when
  it does not answer), ``counters`` (its counters; fails when it does not
  answer), ``wait_workers`` (the forwarder lists exactly one worker
  per replica), ``wait_not_unhealthy``, and ``wait_for`` for anything else.
- ``exec`` runs a command in a service's container (``compose exec -T``),
  ``cli`` runs the host's ``zmqflow`` CLI (``publish`` sends one bus event
  with it), ``logs`` returns the project's logs.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, TypeVar

import docker
import zmq

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.compose import DockerCompose

from zmqflow.client import Client, ForwarderUnreachable
from zmqflow.security import generate
from zmqflow.security.peer import CurveKeys

ROOT = Path(__file__).resolve().parents[1]
ZMQFLOW = str(Path(sys.executable).with_name("zmqflow"))
# The fabric alone: what the core and chaos tests start. The orchestrators
# (Airflow, Prefect) are in compose.yaml too, but their tests start them in
# projects of their own, so the core tests stay light on a 2-core machine.
FABRIC_SERVICES = ("postgres", "forwarder", "worker-python", "worker-rust", "events-log")
WORKER_SERVICES = ("worker-python", "worker-rust")
# Host ports the forwarder publishes (compose.yaml): every project gets its own.
FABRIC_PORTS = (
    "ZMQFLOW_PUBLISH_CLIENT_PORT",
    "ZMQFLOW_PUBLISH_EVENTS_IN_PORT",
    "ZMQFLOW_PUBLISH_EVENTS_OUT_PORT",
    "ZMQFLOW_PUBLISH_METRICS_PORT",
    "ZMQFLOW_PUBLISH_STREAMS_PORT",
)
IMAGES = ("postgres", "forwarder", "worker-python", "worker-rust")
# Images of optional compose profiles (scripts/build-images.sh builds them when named).
OPTIONAL_IMAGES = ("prometheus",)
# The keys one-shot of compose.yaml mounts every key volume under /keys/<role>;
# the containers of the stack run as this uid and read their keys as it.
KEYS_SERVICE = "keys"
STACK_UID = 10001

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def setting(name: str, default: str = "") -> str:
    """A compose variable as compose reads it: the shell's value, else .env's."""
    if name in os.environ:
        return os.environ[name]
    for line in (ROOT / ".env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#") and key.strip() == name:
            return value.strip()
    return default


def ensure_images(names: Iterable[str] = IMAGES) -> None:
    """Build the images (scripts/build-images.sh) when one of ``names`` is missing,
    unless ZMQFLOW_IT_SKIP_BUILD=1 (the caller just built them). Optional images
    (OPTIONAL_IMAGES) are built when missing, whatever ZMQFLOW_IT_SKIP_BUILD says."""
    client = docker.from_env()
    prefix = setting("ZMQFLOW_IMAGE_PREFIX", "zmqflow")
    tag = setting("ZMQFLOW_IMAGE_TAG", "dev")
    missing = []
    for name in names:
        try:
            client.images.get(f"{prefix}/{name}:{tag}")
        except docker.errors.ImageNotFound:
            missing.append(name)
    build = [ROOT / "scripts" / "build-images.sh"]
    if set(missing) - set(OPTIONAL_IMAGES) and os.environ.get("ZMQFLOW_IT_SKIP_BUILD") != "1":
        subprocess.run(["bash", *build], check=True)
    if optional := [name for name in missing if name in OPTIONAL_IMAGES]:
        subprocess.run(["bash", *build, *optional], check=True)


@dataclass(frozen=True)
class HostKeys:
    """This process's CURVE keys (see the module's contract): files in ``folder``."""

    folder: Path
    client_name: str = "integration-tests"

    @property
    def forwarder_public(self) -> Path:
        return self.folder / "forwarder.key"

    @property
    def forwarder_secret(self) -> Path:
        return self.folder / "forwarder.key_secret"

    @property
    def client_public(self) -> Path:
        return self.folder / f"{self.client_name}.key"

    @property
    def client_secret(self) -> Path:
        return self.folder / f"{self.client_name}.key_secret"

    def client_keys(self) -> CurveKeys:
        return CurveKeys.from_files(self.client_secret, self.forwarder_public)

    def seed(self) -> bytes:
        """A tar for /keys of the keys one-shot: the forwarder's pair and our public
        key in allow-clients, owned by the stack's uid (the secret 0600)."""
        members = (
            (f"forwarder/{self.forwarder_public.name}", self.forwarder_public, 0o644),
            (f"forwarder/{self.forwarder_secret.name}", self.forwarder_secret, 0o600),
            (f"allow-clients/{self.client_public.name}", self.client_public, 0o644),
        )
        return _tar(members)


def _tar(members: Iterable[tuple[str, Path, int]]) -> bytes:
    """A tar of (name, file, mode) entries, owned by STACK_UID."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path, mode in members:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            info.uid = info.gid = STACK_UID
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@cache
def host_keys() -> HostKeys:
    """Make this process's keys once and export them as ZMQFLOW_CURVE_SECRET/SERVER."""
    keys = HostKeys(Path(tempfile.mkdtemp(prefix="zmqflow-it-keys-")))
    atexit.register(shutil.rmtree, keys.folder, ignore_errors=True)
    generate(keys.folder, "forwarder", keys.client_name)
    os.environ["ZMQFLOW_CURVE_SECRET"] = str(keys.client_secret)
    os.environ["ZMQFLOW_CURVE_SERVER"] = str(keys.forwarder_public)
    return keys


def curve_socket(kind: int) -> zmq.Socket:
    """A raw pyzmq socket of ``kind`` holding this process's client key (before connect)."""
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    host_keys().client_keys().apply(sock)
    return sock


class _ProjectCompose(DockerCompose):
    """DockerCompose whose every command (testcontainers' own too) carries the
    project name and the project's variables."""

    def __init__(self, project: str, variables: Mapping[str, str], services: list[str]) -> None:
        super().__init__(
            context=ROOT,
            compose_file_name="compose.yaml",
            env_file=".env",
            pull=False,
            build=False,
            wait=True,
            services=services,
        )
        self.project = project
        self.variables = dict(variables)

    @cached_property
    def compose_command_property(self) -> list[str]:
        base = DockerCompose.compose_command_property.func(self)  # [docker, compose, -f, ...]
        env = [f"{k}={v}" for k, v in self.variables.items()]
        return ["env", *env, *base[:2], "--project-name", self.project, *base[2:]]


class ComposeProject:
    """compose.yaml's ``services`` under project ``project``; see the module's contract."""

    def __init__(
        self,
        project: str,
        services: Iterable[str] = FABRIC_SERVICES,
        *,
        ports: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        replicas: Mapping[str, int] | None = None,
        wait_timeout: float = 180,
    ) -> None:
        self.project = project
        self.services = list(services)
        self.replicas = dict(replicas or {})
        self.wait_timeout = wait_timeout
        self.ports = {name: free_port() for name in (*FABRIC_PORTS, *ports)}
        self.variables = {
            "COMPOSE_PROJECT_NAME": project,
            "ZMQFLOW_PUBLISH_HOST": "127.0.0.1",
            **{name: str(port) for name, port in self.ports.items()},
            **(env or {}),
        }
        self.compose = _ProjectCompose(project, self.variables, self.services)
        self.keys = host_keys()
        self.docker = docker.from_env()
        self.env_name = self.variables.get("ZMQFLOW_ENV") or setting("ZMQFLOW_ENV", "dev")
        self.heartbeat_interval = float(
            self.variables.get("ZMQFLOW_HEARTBEAT_INTERVAL")
            or setting("ZMQFLOW_HEARTBEAT_INTERVAL", "1.0")
        )

    # ------------------------------------------------------------ life
    def __enter__(self) -> ComposeProject:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        if os.environ.get("ZMQFLOW_IT_KEEP") != "1":
            self.down()

    def up(self) -> None:
        """Start ``services``; returns once each is healthy (or raises, with the logs printed)."""
        self.down()  # a project left over from an interrupted run keeps its old ports
        try:
            self.seed_keys()
            self.compose.start()  # testcontainers: `up --wait SERVICES`
            if self.replicas:
                self.scale(self.replicas)
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            stderr = getattr(exc, "stderr", None)
            detail = stderr.decode(errors="replace")[-2000:] if stderr else str(exc)
            print(detail, self.logs(), file=sys.stderr)
            self.down()
            raise

    def down(self) -> None:
        """`down --volumes`, with `--profile *` so that optional-profile services go too."""
        self.compose_cmd(
            "--profile", "*", "down", "--volumes", "--remove-orphans", "--timeout", "5",
            check=False,
        )  # fmt: skip

    def compose_cmd(
        self, *args: str, timeout: float = 300, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` for this project (``input`` on its stdin); RuntimeError
        with stderr's tail on failure."""
        out = subprocess.run(
            [*self.compose.compose_command_property, *args],
            cwd=ROOT,
            capture_output=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        result = subprocess.CompletedProcess(
            out.args, out.returncode, out.stdout.decode(errors="replace"),
            out.stderr.decode(errors="replace"),
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()[-1500:]}"
            )
        return result

    # ------------------------------------------------------------ keys
    def keys_run(self, *command: str, input: bytes | None = None) -> str:
        """Run ``command`` in a throwaway container of the keys one-shot (every key
        volume under /keys/<role>); its stdout."""
        out = self.compose_cmd(
            "run", "--rm", "--no-deps", "-T", KEYS_SERVICE, *command, input=input, timeout=120
        )
        return out.stdout

    def seed_keys(self) -> None:
        """Put this process's forwarder key pair and client public key into the
        project's key volumes (made here), before the stack starts."""
        self.keys_run("tar", "-x", "-C", "/keys", input=self.keys.seed())

    def allow_client(self, public_key: Path, name: str | None = None) -> None:
        """Copy a client's public key file into the running project's allow-list
        (renamed into place: the forwarder's folder watch sees a whole file)."""
        name = name or public_key.name
        self.keys_run(
            "sh", "-c", 'cat > "/keys/allow-clients/.$1.tmp" && mv "/keys/allow-clients/.$1.tmp" '
            '"/keys/allow-clients/$1"', "sh", name,
            input=public_key.read_bytes(),
        )  # fmt: skip

    def exec(
        self, service: str, *command: str, timeout: float = 300, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose exec -T SERVICE COMMAND` (the first replica)."""
        return self.compose_cmd("exec", "-T", service, *command, timeout=timeout, check=check)

    def logs(self, *services: str, tail: int = 80) -> str:
        out = self.compose_cmd("logs", "--no-color", f"--tail={tail}", *services, check=False)
        return out.stdout + out.stderr

    # ------------------------------------------------------ containers
    def containers(self, service: str, running: bool = True) -> list[Any]:
        """A service's containers (docker SDK objects), by replica number."""
        filters: dict[str, Any] = {
            "label": [
                f"com.docker.compose.project={self.project}",
                f"com.docker.compose.service={service}",
            ]
        }
        if running:
            filters["status"] = "running"
        found = self.docker.containers.list(all=not running, filters=filters)
        return sorted(
            found, key=lambda c: int(c.labels.get("com.docker.compose.container-number", 0))
        )

    def container(self, service: str) -> Any:
        """The service's first replica, running or not."""
        found = self.containers(service, running=False)
        assert found, f"no container for {service} in project {self.project}"
        return found[0]

    def hosts(self, *services: str) -> set[str]:
        """Hostnames (short container ids) of the running replicas of ``services``."""
        return {c.attrs["Config"]["Hostname"] for s in services for c in self.containers(s)}

    def kill(self, service: str, sig: str | int = signal.SIGKILL) -> Any:
        """Signal the service's first replica (SIGKILL: no restart policy brings it back)."""
        container = self.container(service)
        container.kill(signal=sig)
        return container

    def restart(self, service: str, timeout: int = 10) -> Any:
        """`docker restart` the first replica (SIGTERM, then SIGKILL after ``timeout``)."""
        container = self.container(service)
        container.restart(timeout=timeout)
        return container

    @cached_property
    def network(self) -> Any:
        return self.docker.networks.get(f"{self.project}_default")

    def scale(self, replicas: Mapping[str, int]) -> None:
        """`up --scale SERVICE=N ... SERVICE...`, until every replica is healthy.

        Only the named services are started: a bare `up --scale` would start
        every service of compose.yaml (Airflow and Prefect too)."""
        scales = [arg for s, n in replicas.items() for arg in ("--scale", f"{s}={n}")]
        self.wait_not_unhealthy()  # `up --wait` fails at once on an unhealthy container
        self.compose_cmd(
            "up", "--detach", "--wait", "--wait-timeout", f"{self.wait_timeout:g}",
            "--no-recreate", *scales, *replicas,
        )  # fmt: skip

    def wait_not_unhealthy(self, timeout: float = 60) -> None:
        """Until no container of the project reports "unhealthy".

        A worker paused past its healthcheck shows "unhealthy" until the next
        probe after unpausing (up to the 5 s probe interval), though it serves."""

        def healthy() -> bool:
            return not [
                c.name
                for c in self.docker.containers.list(
                    filters={"label": f"com.docker.compose.project={self.project}"}
                )
                if c.attrs["State"].get("Health", {}).get("Status") == "unhealthy"
            ]

        wait_for(healthy, timeout, f"no unhealthy container in {self.project}", every=0.5)

    # ---------------------------------------------------------- fabric
    def endpoint(self, port_variable: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[port_variable]}"

    @property
    def client_endpoint(self) -> str:
        return self.endpoint("ZMQFLOW_PUBLISH_CLIENT_PORT")

    @property
    def events_in(self) -> str:
        return self.endpoint("ZMQFLOW_PUBLISH_EVENTS_IN_PORT")

    @property
    def events_out(self) -> str:
        return self.endpoint("ZMQFLOW_PUBLISH_EVENTS_OUT_PORT")

    @property
    def streams(self) -> str:
        return self.endpoint("ZMQFLOW_PUBLISH_STREAMS_PORT")

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the host's zmqflow CLI (from this venv)."""
        return subprocess.run(
            [ZMQFLOW, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The forwarder's STATUS, or None when it does not answer within ``timeout``."""
        try:
            with Client(self.client_endpoint, timeout=timeout) as client:
                return client.status(timeout)
        except ForwarderUnreachable:
            return None

    def counters(self, timeout: float = 10.0) -> dict[str, int]:
        """The forwarder's counters (accepted, completed, workers_lost, ...); fails when
        it does not answer within ``timeout``."""
        status = self.status(timeout)
        assert status is not None, f"the forwarder of {self.project} did not answer STATUS"
        return dict(status["counters"])

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Publish one bus event with the host's zmqflow CLI (as a user would)."""
        out = self.cli(
            "publish", "--connect", self.events_in, "--kind", kind, "--data", json.dumps(data),
            timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, f"zmqflow publish failed: {out.stderr}"

    def wait_workers(self, hosts: set[str] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Until the forwarder lists exactly one worker per host (default: every
        running replica of WORKER_SERVICES) and no other; returns that status."""
        last: dict[str, Any] | None = None

        def probe() -> dict[str, Any] | None:
            nonlocal last
            expected = self.hosts(*WORKER_SERVICES) if hosts is None else hosts
            last = self.status()
            return last if last is not None and registered(last, expected) else None

        try:
            return wait_for(probe, timeout, "the workers to register")
        except AssertionError:
            raise AssertionError(f"workers not registered after {timeout:g}s: {last}") from None


def registered(status: Mapping[str, Any], hosts: set[str]) -> bool:
    """True when the status lists exactly one worker per host and no other."""
    ids = [w["id"] for w in status.get("workers", [])]
    return len(ids) == len(hosts) and all(sum(h in i for i in ids) == 1 for h in hosts)
