"""The permissions file, re-read when it changes and on SIGHUP, as the allow-lists are.

Contract: ``PermissionsFile(path)`` loads the file at once and raises
``PermissionsError`` if it cannot be used (the forwarder does not start on
a broken file). ``current`` is the rules in force: a ``Permissions`` never
changed in place, replaced whole by a reload (one reference assignment, so
the broker thread reads either the old rules or the new ones, never a mix).
``refresh(force)`` re-reads the file if its size, modification time or inode
changed (the rule ``authenticator.folder_snapshot`` applies to allow-list
folders), or always with ``force`` (SIGHUP). The forwarder's ZAP thread
calls it every ``check_interval`` (1 s) and on SIGHUP, next to the
allow-lists (authenticator.py, policy.py). A file that no longer parses, or
is gone, leaves the previous rules in force and is logged at ERROR naming
the file and line (once per state of the file): a half-saved edit must not
lock every key out, nor let every key in. A reload that changes something
is logged at INFO with the keys whose grants changed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from zmqflow.security.permissions.engine import KeyRights, Permissions
from zmqflow.security.permissions.parse import PermissionsError, load

log = logging.getLogger("zmqflow.security")

FileSnapshot = tuple[int, int, int] | None


def file_snapshot(path: Path) -> FileSnapshot:
    """What a file looks like now (size, mtime, inode); None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _meaning(rights: KeyRights | None) -> object:
    """What a key's grants allow, whatever lines they stand on (for the reload's log)."""
    if rights is None:
        return None
    return {
        right: tuple((g.holder, g.pattern.text if g.pattern else None) for g in grants)
        for right, grants in rights.grants.items()
    }


class PermissionsFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._snapshot = file_snapshot(self.path)
        self.current: Permissions = load(self.path)
        self.reloads = 0  # rule sets taken after the first
        self.failures = 0  # re-reads that kept the previous rules
        log.info(
            "permissions from %s: %d keys, %d groups; anything not granted is refused",
            self.path,
            len(self.current.keys),
            len(self.current.groups),
        )

    def refresh(self, force: bool = False) -> bool:
        """Re-read the file if it changed (always if ``force``); True if new rules were taken."""
        snapshot = file_snapshot(self.path)
        if not force and snapshot == self._snapshot:
            return False
        self._snapshot = snapshot
        try:
            rules = load(self.path)
        except PermissionsError as exc:
            self.failures += 1
            log.error("permissions not reloaded, the previous ones stay in force: %s", exc)
            return False
        changed = sorted(
            name
            for name in rules.keys.keys() | self.current.keys.keys()
            if _meaning(rules.keys.get(name)) != _meaning(self.current.keys.get(name))
        )
        self.current = rules
        self.reloads += 1
        log.info(
            "permissions reloaded from %s: %d keys, %d groups (changed: %s)",
            self.path,
            len(rules.keys),
            len(rules.groups),
            ", ".join(changed) or "nothing",
        )
        return True
