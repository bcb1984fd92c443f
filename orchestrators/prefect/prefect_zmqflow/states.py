"""Prefect state changes as zmqflow bus events, and bus events as Prefect events.

Contract: ``state_event`` turns a Prefect ``prefect.flow-run.<State>`` or
``prefect.task-run.<State>`` event into the bus kind
``prefect.flow-run.<state>`` / ``prefect.task-run.<state>`` (state name in
lower case, spaces as dashes; the topic is ``<env>.<kind>``) and a data map
(run id and name, state name and type, flow, deployment, when); anything
else gives None. ``prefect_event`` turns a bus event into the arguments of
``prefect.events.emit_event``: event name ``zmqflow.<kind>``, resource
``zmqflow.bus.<kind>``, payload with the event's data, topic, source and
seq, so that a deployment trigger can ``expect: [zmqflow.data.ready]`` and
template ``{{ event.payload.data }}`` into parameters.
"""

from __future__ import annotations

from typing import Any

from prefect.events.schemas.events import Event as PrefectEvent

from zmqflow.events import Event as BusEvent

STATE_PREFIXES = ("prefect.flow-run.", "prefect.task-run.")
# Bus kinds the bridge itself publishes: never sent back to Prefect (no loops).
OWN_KIND_PREFIX = "prefect."


def state_event(event: PrefectEvent) -> tuple[str, dict[str, Any]] | None:
    for prefix in STATE_PREFIXES:
        if event.event.startswith(prefix):
            break
    else:
        return None
    resource = event.resource
    # Other events share the prefix (prefect.flow-run.pull-step.executed): a state
    # change is the one named after the state its resource is now in.
    state_name = resource.get("prefect.state-name")
    if state_name is None or event.event != prefix + state_name:
        return None
    kind = prefix + state_name.lower().replace(" ", "-")
    data: dict[str, Any] = {
        "id": resource.id.rsplit(".", 1)[-1],
        "name": resource.get("prefect.resource.name"),
        "state": state_name,
        "state_type": resource.get("prefect.state-type"),
        "occurred": event.occurred.isoformat(),
        "prefect_event_id": str(event.id),
    }
    for related in event.related:
        role = related.role
        if role in ("flow", "deployment", "flow-run", "work-pool"):
            data[role.replace("-", "_")] = related.get("prefect.resource.name")
            data[role.replace("-", "_") + "_id"] = related.id.rsplit(".", 1)[-1]
    return kind, data


def prefect_event(env: str, event: BusEvent) -> dict[str, Any]:
    """emit_event(**this) for a bus event whose topic is ``<env>.<kind>``."""
    kind = event.topic[len(env) + 1 :] if event.topic.startswith(env + ".") else event.topic
    return {
        "event": f"zmqflow.{kind}",
        "resource": {
            "prefect.resource.id": f"zmqflow.bus.{kind}",
            "prefect.resource.name": event.topic,
            "zmqflow.env": env,
            "zmqflow.source": event.source,
        },
        "payload": {
            "data": event.data,
            "topic": event.topic,
            "source": event.source,
            "seq": event.seq,
            "ts": event.ts,
        },
    }
