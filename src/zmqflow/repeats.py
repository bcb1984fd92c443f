"""How often one kind of warning is written: once, then at most once per interval.

Contract: ``Repeats(interval_s, remember)`` answers ``due(key, now)`` for
one occurrence of the warning ``key`` (say a refused key and its address):
``None`` when it falls within ``interval_s`` of the last warning written for
that key (the occurrence is counted, not written), else the number of
occurrences kept quiet since that warning (0 the first time), and the
caller writes its warning now, naming that count. At most ``remember`` keys
are held; past that they are all forgotten, so a flood of distinct keys
costs bounded memory and gets warned about again. The clock is the caller's.
Used wherever a peer can make the forwarder log on its behalf: refused
handshakes, malformed messages.
"""

from __future__ import annotations

from collections.abc import Hashable


class Repeats:
    def __init__(self, interval_s: float = 60.0, remember: int = 10_000) -> None:
        self.interval_s = interval_s
        self.remember = remember
        self._last: dict[Hashable, tuple[float, int]] = {}

    def due(self, key: Hashable, now: float) -> int | None:
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return None
        if seen is None and len(self._last) >= self.remember:
            self._last.clear()
        self._last[key] = (now, 0)
        return seen[1] if seen is not None else 0


def since(quiet: int) -> str:
    """The tail of a warning that kept ``quiet`` others back ("" for none)."""
    return f"; {quiet} more since the last warning" if quiet else ""
