"""The brokers `make bench` compares against, run by the benchmark itself.

Contract: ``ensure_packages()`` installs the Debian packages that carry the
servers (redis-server, rabbitmq-server, nats-server) with apt-get when one
is missing, as scripts/system-deps.sh does, and stops any system service the
install started, so that nothing of ours is left running. ``redis``,
``rabbitmq`` and ``nats`` each start one server on a free loopback port
with its data in a temp folder, yield its URL once it accepts connections,
and kill it (its whole process group) and remove the folder on the way out.
Server versions are read from the binaries so the report can name them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_measure import free_port, port_open, processes, wait_until

PACKAGES = {
    "redis-server": "/usr/bin/redis-server",
    "rabbitmq-server": "/usr/lib/rabbitmq/bin/rabbitmq-server",
    "nats-server": "/usr/sbin/nats-server",
}
EPMD = "/usr/bin/epmd"


def _as_root() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], check=False).returncode == 0:
        return ["sudo", "-n"]
    missing = [p for p, b in PACKAGES.items() if not Path(b).exists()]
    raise SystemExit(
        f"bench: missing Debian packages {' '.join(missing)}; as root run:\n"
        f"    apt-get install -y --no-install-recommends {' '.join(missing)}"
    )


def _active_services(names: list[str]) -> set[str]:
    if not shutil.which("systemctl"):
        return set()
    active = set()
    for name in names:
        probe = subprocess.run(
            ["systemctl", "is-active", "--quiet", name], check=False, capture_output=True
        )
        if probe.returncode == 0:
            active.add(name)
    return active


def ensure_packages(say: Callable[[str], object] = print) -> None:
    missing = [p for p, binary in PACKAGES.items() if not Path(binary).exists()]
    if not missing:
        return
    root = _as_root()
    say(f"installing {' '.join(missing)} (apt-get)")
    before = _active_services(missing)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*root, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    # Debian starts a freshly installed server as a system service on its
    # default port; the benchmark runs its own, and leaves nothing running.
    for service in _active_services(missing) - before:
        subprocess.run([*root, "systemctl", "disable", "--now", service], check=False)
    still = [p for p, binary in PACKAGES.items() if not Path(binary).exists()]
    if still:
        raise SystemExit(f"bench: {' '.join(still)} still missing after apt-get install")


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return (
            (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
        )

    rabbit = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    redis = re.search(r"v=(\S+)", first_line([PACKAGES["redis-server"], "--version"]))
    return {
        "redis": f"redis-server {redis.group(1) if redis else 'unknown'}",
        "rabbitmq": f"rabbitmq-server {rabbit}".strip(),
        "nats": first_line([PACKAGES["nats-server"], "--version"]).replace(":", ""),
    }


@contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@contextmanager
def redis(logs: Path) -> Iterator[str]:
    """Redis with no snapshots and no append-only file: Celery's broker as commonly run."""
    port = free_port()
    with _scratch("bench-redis-") as data:
        cmd = [
            PACKAGES["redis-server"],
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        with processes(cmd, logs=logs, name="redis"):
            wait_until(port_open(port), 30, "redis-server")
            yield f"redis://127.0.0.1:{port}"


@contextmanager
def rabbitmq(logs: Path) -> Iterator[str]:
    """A RabbitMQ node of its own: own epmd, node name, ports, data and cookie."""
    port, dist, epmd_port = free_port(), free_port(), free_port()
    with _scratch("bench-rabbit-") as home:
        (home / "enabled_plugins").write_text("[].\n")
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{port}\n"
            "log.console = true\nlog.file = false\nlog.console.level = warning\n"
        )
        env = dict(
            os.environ,
            HOME=str(home),  # the Erlang cookie is written here
            ERL_EPMD_PORT=str(epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=f"bench{port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(port),
            RABBITMQ_DIST_PORT=str(dist),
            RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
            RABBITMQ_LOG_BASE=str(home / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(home / "rabbitmq"),
            RABBITMQ_PID_FILE=str(home / "pid"),
        )
        # epmd in the foreground as our child: `-daemon` (what rabbitmq would
        # start by itself) would outlive the benchmark
        epmd = [EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"]
        with processes(epmd, logs=logs, name="epmd", env=env):
            wait_until(port_open(epmd_port), 30, "epmd")
            with processes([PACKAGES["rabbitmq-server"]], logs=logs, name="rabbitmq", env=env):
                wait_until(port_open(port), 120, "rabbitmq-server")
                yield f"amqp://guest:guest@127.0.0.1:{port}//"


@contextmanager
def nats(logs: Path) -> Iterator[str]:
    """nats-server with JetStream on, its store in a temp folder."""
    port = free_port()
    with _scratch("bench-nats-") as store:
        cmd = [
            PACKAGES["nats-server"],
            "-a", "127.0.0.1",
            "-p", str(port),
            "-js",
            "-sd", str(store),
        ]  # fmt: skip
        with processes(cmd, logs=logs, name="nats"):
            wait_until(port_open(port), 30, "nats-server")
            yield f"nats://127.0.0.1:{port}"
