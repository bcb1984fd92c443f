"""Saves the stack's block document, from the environment.

Contract: ``python -m prefect_zmqflow.setup [NAME]`` saves (overwrites) the
``ZmqflowCredentials`` document NAME (default ``fabric``) with the endpoints
and keys from ZMQFLOW_PREFECT_* environment variables; the deploy one-shot
runs it after ``prefect block register -m prefect_zmqflow``. Flows load the
block by that name. Keys: the Z85 text in ZMQFLOW_PREFECT_CURVE_*, or else
the key files ZMQFLOW_CURVE_SECRET and ZMQFLOW_CURVE_SERVER name (as every
zmqflow client reads them), copied into the block's secret fields.
"""

from __future__ import annotations

import sys

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefect_zmqflow.credentials import ZmqflowCredentials
from zmqflow.security.peer import resolve

DEFAULT_BLOCK = "fabric"


class BlockSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZMQFLOW_PREFECT_")

    frontend: str = "tcp://forwarder:5555"
    events_in: str = "tcp://forwarder:5557"
    events_out: str = "tcp://forwarder:5558"
    env: str = Field(default="dev", validation_alias=AliasChoices("ZMQFLOW_ENV", "env"))
    timeout_s: float = 900.0
    curve_server_public_key: SecretStr | None = None
    curve_public_key: SecretStr | None = None
    curve_secret_key: SecretStr | None = None


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_BLOCK
    values = BlockSettings().model_dump()
    keys = ("curve_server_public_key", "curve_public_key", "curve_secret_key")
    if all(values[k] is None for k in keys):
        curve = resolve()  # the key files, if ZMQFLOW_CURVE_SECRET/SERVER name them
        if curve is not None:
            texts = (curve.server.decode(), curve.public_text, curve.secret.decode())
            values.update(zip(keys, texts, strict=True))
    block = ZmqflowCredentials(**values)
    block.save(name, overwrite=True)
    print(f"saved zmqflow-credentials/{name}: frontend {block.frontend}, env {block.env}")


if __name__ == "__main__":
    main()
