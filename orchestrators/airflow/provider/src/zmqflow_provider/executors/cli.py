"""The executor's Airflow CLI commands: none.

Contract: ``get_cli_commands()`` is listed under ``cli`` in the provider's
info, so Airflow's CLI knows this provider's executor has no commands of its
own and neither warns about it nor imports the executor to look for them.
"""

from __future__ import annotations

from typing import Any


def get_cli_commands() -> list[Any]:
    return []
