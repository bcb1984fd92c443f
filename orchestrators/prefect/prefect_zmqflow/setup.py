"""Saves the stack's block document, from the environment.

Contract: ``python -m prefect_zmqflow.setup [NAME]`` saves (overwrites) the
``ZmqflowCredentials`` document NAME (default ``fabric``) with the endpoints
and keys from ZMQFLOW_PREFECT_* environment variables; the deploy one-shot
runs it after ``prefect block register -m prefect_zmqflow``. Flows load the
block by that name.
"""

from __future__ import annotations

import sys

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefect_zmqflow.credentials import ZmqflowCredentials

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
    block = ZmqflowCredentials(**BlockSettings().model_dump())
    block.save(name, overwrite=True)
    print(f"saved zmqflow-credentials/{name}: frontend {block.frontend}, env {block.env}")


if __name__ == "__main__":
    main()
