"""ZFP/2 wire protocol: frames to messages and back (see docs/protocol.md).

Contract: ``encode(msg)`` returns the frames a DEALER sends (no routing id,
no delimiter); ``decode(frames)`` is its inverse and raises
``ProtocolError`` with a refusal code for anything it cannot use.
``encode_split`` cuts a batch into messages of at most ``max_items`` items
and ``MAX_MESSAGE_BYTES`` bytes, and an id list (ACCEPTED, REFUSED,
COLLECT, RETRY, READY's inflight) into messages whose body fits the 64 KiB
frame limit: what senders use.

Batched commands: SUBMIT, TASK, RESULT and FAILED (both sides) carry 1..N
items in ONE body frame, a msgpack array of item arrays (payloads inside as
``bin``): one frame per message however many items, because per-frame
costs dominated the hot path of the first version.

The package, one concept a module:

- ``frames``: signatures, command codes, ``ProtocolError``, msgpack rules;
- ``items``: one field table per item kind (``SUBMIT_ITEM`` of
  ``SubmitItem``, ``TASK_ITEM`` of ``TaskItem``, ``WORKER_RESULT_ITEM``,
  ``WORKER_FAILURE_ITEM``, ``RESULT_ITEM``, ``FAILURE_ITEM``), from which
  the encoders, the usual-batch tests of the hot paths and the checked
  decoders all come;
- ``messages``: one class per command (``Submit``, ``Tasks``, ...);
- ``codec``: encode, decode and the size rule.

The limits and name rules (``MAX_BATCH``, ``valid_ids``, ``uints``...) live
in ``zmqflow.limits`` and are importable from here under the same names.
The item classes' first names stay importable (``Task`` is ``SubmitItem``,
``Dispatch`` is ``TaskItem``, ``Done`` / ``Error`` the worker's result and
failure items, ``Result`` / ``Failed`` the client's).
"""

from zmqflow.limits import (
    MAX_BATCH,
    MAX_MAP_BYTES,
    MAX_MESSAGE_BYTES,
    uint,
    uints,
    valid_id,
    valid_ids,
    valid_service,
)
from zmqflow.protocol.codec import (
    _pack,
    decode,
    decode_client_results,
    decode_request,
    decode_task,
    decode_task_items,
    decode_worker_results,
    encode,
    encode_items,
    encode_split,
    readable_ids,
    split_ids,
    submit_items,
)
from zmqflow.protocol.frames import CLIENT_SIGNATURE, WORKER_SIGNATURE, Command, ProtocolError
from zmqflow.protocol.items import (
    FAILURE_ITEM,
    RESULT_ITEM,
    SUBMIT_ITEM,
    TASK_ITEM,
    WORKER_FAILURE_ITEM,
    WORKER_RESULT_ITEM,
    FailureItem,
    ItemKind,
    ResultItem,
    SubmitItem,
    TaskItem,
    WorkerFailureItem,
    WorkerResultItem,
    all_fresh,
    dispatch_items,
    failed_item,
    is_fresh,
    result_item,
    usual_dispatch,
    usual_dispatches,
    usual_done,
    usual_dones,
    usual_result,
    usual_results,
    usual_task,
    usual_tasks,
)
from zmqflow.protocol.messages import (
    Accepted,
    Batch,
    Collect,
    Disconnect,
    Failures,
    Heartbeat,
    HeartbeatReply,
    IdList,
    Message,
    Ready,
    Refused,
    Results,
    Retry,
    Status,
    StatusRequest,
    Submit,
    Tasks,
    WorkerFailures,
    WorkerHeartbeat,
    WorkerResults,
)

# the item classes' first names (importers and tests use them)
Task = SubmitItem
Dispatch = TaskItem
Done = WorkerResultItem
Error = WorkerFailureItem
Result = ResultItem
Failed = FailureItem

__all__ = [
    "CLIENT_SIGNATURE",
    "FAILURE_ITEM",
    "MAX_BATCH",
    "MAX_MAP_BYTES",
    "MAX_MESSAGE_BYTES",
    "RESULT_ITEM",
    "SUBMIT_ITEM",
    "TASK_ITEM",
    "WORKER_FAILURE_ITEM",
    "WORKER_RESULT_ITEM",
    "WORKER_SIGNATURE",
    "Accepted",
    "Batch",
    "Collect",
    "Command",
    "Disconnect",
    "Dispatch",
    "Done",
    "Error",
    "Failed",
    "FailureItem",
    "Failures",
    "Heartbeat",
    "HeartbeatReply",
    "IdList",
    "ItemKind",
    "Message",
    "ProtocolError",
    "Ready",
    "Refused",
    "Result",
    "ResultItem",
    "Results",
    "Retry",
    "Status",
    "StatusRequest",
    "Submit",
    "SubmitItem",
    "Task",
    "TaskItem",
    "Tasks",
    "WorkerFailureItem",
    "WorkerFailures",
    "WorkerHeartbeat",
    "WorkerResultItem",
    "WorkerResults",
    "_pack",
    "all_fresh",
    "decode",
    "decode_client_results",
    "decode_request",
    "decode_task",
    "decode_task_items",
    "decode_worker_results",
    "dispatch_items",
    "encode",
    "encode_items",
    "encode_split",
    "failed_item",
    "is_fresh",
    "readable_ids",
    "result_item",
    "split_ids",
    "submit_items",
    "uint",
    "uints",
    "usual_dispatch",
    "usual_dispatches",
    "usual_done",
    "usual_dones",
    "usual_result",
    "usual_results",
    "usual_task",
    "usual_tasks",
    "valid_id",
    "valid_ids",
    "valid_service",
]
