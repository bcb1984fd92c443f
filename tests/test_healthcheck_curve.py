"""zmqflow-healthcheck against a CURVE forwarder: the compose stack's probes.

The forwarder's and events-log's healthchecks ask STATUS as a CURVE client
holding the key files named by ZMQFLOW_CURVE_SECRET / ZMQFLOW_CURVE_SERVER,
the same variables every zmqflow client reads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fabric import clean_env
from security_fabric import Keys, SecureFabric

PROBE = [sys.executable, "-m", "zmqflow.healthcheck"]


def _probe(endpoint: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROBE, "forwarder", endpoint, "2"],
        capture_output=True,
        text=True,
        env={**clean_env(), **env},
        timeout=30,
    )


def test_healthcheck_with_an_allowed_client_key_passes_and_without_keys_fails(
    tmp_path: Path,
) -> None:
    keys = Keys(tmp_path / "keys")
    fabric = SecureFabric(tmp_path, keys)
    try:
        fabric.start_secure_forwarder()
        fabric.wait_forwarder()
        allowed = _probe(
            fabric.frontend,
            ZMQFLOW_CURVE_SECRET=str(keys.secret("client")),
            ZMQFLOW_CURVE_SERVER=str(keys.public("forwarder")),
        )
        assert allowed.returncode == 0, allowed.stderr
        plain = _probe(fabric.frontend)
        assert plain.returncode == 1 and "no answer" in plain.stderr
        stranger = _probe(
            fabric.frontend,
            ZMQFLOW_CURVE_SECRET=str(keys.secret("stranger")),
            ZMQFLOW_CURVE_SERVER=str(keys.public("forwarder")),
        )
        assert stranger.returncode == 1 and "no answer" in stranger.stderr
    finally:
        fabric.stop()


def test_healthcheck_with_half_a_key_pair_says_so(tmp_path: Path) -> None:
    half = _probe("tcp://127.0.0.1:1", ZMQFLOW_CURVE_SECRET=str(tmp_path / "x.key_secret"))
    assert half.returncode == 1
    assert "ZMQFLOW_CURVE_SECRET and ZMQFLOW_CURVE_SERVER go together" in half.stderr
