"""Provider metadata, found by Airflow through the `apache_airflow_provider` entry point.

Contract: ``get_provider_info()`` returns the dictionary Airflow's
ProvidersManager reads: ``package-name`` equals the distribution name, the
``zmqflow`` connection type maps to ZmqflowHook, and ``queues`` registers the
``zmq`` scheme for common-messaging's MessageQueueTrigger, and ``executors``
lists ZmqflowExecutor.
"""

from __future__ import annotations

from typing import Any

from zmqflow_provider import __version__


def _endpoint(label: str, default: str) -> dict[str, Any]:
    return {
        "label": label,
        "description": "tcp://HOST:PORT or ipc:///path/to/socket",
        "schema": {"type": ["string", "null"], "default": default},
    }


def _key(label: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": "40 characters of Z85", "schema": schema}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-zmqflow",
        "name": "zmqflow",
        "description": "Hand work to the zmqflow ZeroMQ fabric and react to its events.",
        "versions": [__version__],
        "integrations": [{"integration-name": "zmqflow", "tags": ["protocol"]}],
        "operators": [
            {
                "integration-name": "zmqflow",
                "python-modules": ["zmqflow_provider.operators.zmqflow"],
            }
        ],
        "hooks": [
            {"integration-name": "zmqflow", "python-modules": ["zmqflow_provider.hooks.zmqflow"]}
        ],
        "triggers": [
            {
                "integration-name": "zmqflow",
                "python-modules": ["zmqflow_provider.triggers.zmqflow"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "zmqflow",
                "hook-class-name": "zmqflow_provider.hooks.zmqflow.ZmqflowHook",
                "hook-name": "zmqflow",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "port", "schema", "login", "password"],
                    "relabeling": {},
                },
                "conn-fields": {
                    "frontend": _endpoint(
                        "Forwarder client endpoint (ROUTER)", "tcp://forwarder:5555"
                    ),
                    "events_in": _endpoint("Event bus input (XSUB)", "tcp://forwarder:5557"),
                    "events_out": _endpoint("Event bus output (XPUB)", "tcp://forwarder:5558"),
                    "env": {
                        "label": "Environment (topics are <env>.<kind>)",
                        "schema": {"type": ["string", "null"], "default": "dev"},
                    },
                    # Reserved for CurveZMQ (the security work): read and
                    # validated by the hook, not yet applied to sockets.
                    "curve_server_public_key": _key("Forwarder CURVE public key (Z85)"),
                    "curve_public_key": _key("Client CURVE public key (Z85)"),
                    "curve_secret_key": _key("Client CURVE secret key (Z85)", secret=True),
                },
            }
        ],
        "queues": ["zmqflow_provider.queues.zmq.ZmqMessageQueueProvider"],
        "executors": ["zmqflow_provider.executors.executor.ZmqflowExecutor"],
        "cli": ["zmqflow_provider.executors.cli.get_cli_commands"],
    }
