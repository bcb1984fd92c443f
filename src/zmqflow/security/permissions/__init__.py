"""Per-key permissions: which services a key may submit to or serve, which
topics it may publish or read, whose answers it may collect, and who is an
admin (docs/security.md#permissions).

``patterns`` (dot-separated wildcards), ``engine`` (``Permissions``: one
method per question, each answered with a ``Decision`` naming its rule),
``parse`` (the TOML file, errors with file and line), ``watch``
(``PermissionsFile``: re-read on change and on SIGHUP), ``grants`` (the
edit ``make client-key GRANTS=...`` makes). No sockets here: the forwarder
asks, this package answers.
"""

from zmqflow.security.permissions.engine import (
    Decision,
    Permissions,
    subscription_kind,
    topic_kind,
)
from zmqflow.security.permissions.parse import PermissionsError, load, parse
from zmqflow.security.permissions.patterns import Pattern
from zmqflow.security.permissions.watch import PermissionsFile

__all__ = [
    "Decision",
    "Pattern",
    "Permissions",
    "PermissionsError",
    "PermissionsFile",
    "load",
    "parse",
    "subscription_kind",
    "topic_kind",
]
