"""Task ids: UUIDv7 (RFC 9562) written as 32 hex digits.

Contract: ``new_id()`` returns an id no other call returns, in this or any
other process, and ids from one process sort in the order they were made.
Time-ordered ids matter to the forwarder: its journal indexes answers by id,
and random ids (uuid4) wrote all over that index, which made each journaled
task cost about twice as much.

Layout (RFC 9562, section 6.2, method 1): 48 bits of Unix milliseconds, the
version (7), a 12-bit counter for ids made in the same millisecond (it starts
at a random value below 1024 each millisecond; when it is full, the next
millisecond is borrowed), the variant, and 62 random bits drawn once per
process (again after a fork). Formatting one counter is about a third of the
cost of formatting 74 fresh random bits per id.
"""

from __future__ import annotations

import os
import random
import threading
import time

_VARIANT = 0b10 << 62  # RFC 9562 variant bits, above the 62 random ones


class UuidV7:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._millis = -1
        self._counter = 0
        self._prefix = ""
        self._tail = ""
        self.reseed()

    def reseed(self) -> None:
        """New random bits: a forked child must not repeat its parent's ids."""
        with self._lock:
            self._tail = f"{_VARIANT | random.getrandbits(62):016x}"
            self._millis = -1

    def _after_fork(self) -> None:
        # another thread may have held the lock at the fork: the child's copy
        # would stay locked for ever, so it gets a new one
        self._lock = threading.Lock()
        self.reseed()

    def __call__(self) -> str:
        millis = time.time_ns() // 1_000_000
        with self._lock:
            if millis > self._millis:
                self._millis = millis
                self._counter = random.getrandbits(10)
                self._prefix = f"{millis:012x}7"
            elif self._counter < 0xFFF:
                self._counter += 1  # same millisecond, or the clock went back
            else:  # 4096 ids in one millisecond: borrow the next one
                self._millis += 1
                self._counter = 0
                self._prefix = f"{self._millis:012x}7"
            return f"{self._prefix}{self._counter:03x}{self._tail}"


new_id = UuidV7()
os.register_at_fork(after_in_child=new_id._after_fork)
