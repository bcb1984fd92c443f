"""Container healthchecks that start fast: ``zmqflow-healthcheck``.

Contract: ``zmqflow-healthcheck file PATH [MAX_AGE_S]`` exits 0 when PATH
was touched within MAX_AGE_S (default 5) seconds (a worker touches its
health file whenever it hears its forwarder); ``zmqflow-healthcheck
forwarder ENDPOINT [TIMEOUT_S]`` exits 0 when a forwarder answers a STATUS
request there within TIMEOUT_S (default 3); when ZMQFLOW_CURVE_SECRET and
ZMQFLOW_CURVE_SERVER name key files (as for every client), it asks as that
CURVE client. Anything else exits 1 with one line on stderr. It imports only
zmq and the protocol (and the key files' reader), not the CLI: compose runs
it every few seconds in every container, and the full CLI's imports cost
about four times the CPU.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import zmq

from zmqflow import protocol as p
from zmqflow.limits import curve_pair_rule


def file_is_fresh(path: str, max_age_s: float) -> str | None:
    """None when fresh, else why not."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist yet"
    return None if age <= max_age_s else f"forwarder last heard {age:.1f}s ago"


def _curve(sock: zmq.Socket) -> None:
    """CURVE client keys from ZMQFLOW_CURVE_SECRET/SERVER, when set (the key files
    only: settings and the client package cost more CPU than the probe)."""
    secret_file = os.environ.get("ZMQFLOW_CURVE_SECRET")
    server_file = os.environ.get("ZMQFLOW_CURVE_SERVER")
    if not curve_pair_rule(
        secret_file, server_file, ("ZMQFLOW_CURVE_SECRET", "ZMQFLOW_CURVE_SERVER")
    ):
        return
    from zmqflow.security.keys import load_public, load_secret

    sock.curve_publickey, sock.curve_secretkey = load_secret(secret_file)
    sock.curve_serverkey = load_public(server_file)


def forwarder_answers(endpoint: str, timeout_s: float) -> str | None:
    """None when a forwarder at ``endpoint`` answers STATUS in time, else why not."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        _curve(sock)
        sock.connect(endpoint)
        sock.send_multipart(p.encode(p.StatusRequest()))
        until = time.monotonic() + timeout_s
        while (left := until - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000)):
                break
            if isinstance(p.decode(sock.recv_multipart()), p.Status):
                return None
        return f"no answer from {endpoint} within {timeout_s}s"
    except (zmq.ZMQError, p.ProtocolError, ValueError) as exc:
        return f"{endpoint}: {exc}"
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) in (2, 3) and args[0] == "file":
        problem = file_is_fresh(args[1], float(args[2]) if len(args) == 3 else 5.0)
    elif len(args) in (2, 3) and args[0] == "forwarder":
        problem = forwarder_answers(args[1], float(args[2]) if len(args) == 3 else 3.0)
    else:
        problem = (
            "usage: zmqflow-healthcheck file PATH [MAX_AGE_S] | forwarder ENDPOINT [TIMEOUT_S]"
        )
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
