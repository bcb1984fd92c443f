"""ZAP for the forwarder: one allow-list folder per role, reloaded without restarts.

Contract: ``RoleAuthenticator`` is pyzmq's ``zmq.auth.Authenticator`` with one
CURVE allow-list per ZAP domain (``roles``: domain -> folder of ``*.key``
files), loaded with ``configure_curve(domain, folder)`` as pyzmq means it;
the decision is pyzmq's (a key is allowed in a domain when its folder holds
it; an unknown domain, any key outside the list and any mechanism but
CURVE are refused). What it adds: a key file that cannot be read is skipped
with a warning instead of emptying the whole list; ``refresh()`` reloads a
folder whose contents changed (``force``: every folder); every refused
handshake is logged at WARNING naming the key (Z85, as in its .key file),
the peer address and the domain, at most once a minute per key, address and
domain (with the count since); accepted ones at DEBUG; ``accepted`` and
``refused`` count them per domain. An accepted peer's connection carries its
key name (the allow-list file's name without ``.key``) as the ZAP metadata
property ``X-Key-Name`` (``KEY_NAME``): every message it sends has it,
``frame.get(KEY_NAME)`` on a frame received with ``copy=False``, routing id
frame included. The ZAP User-Id stays the key's Z85 text (pyzmq's default).
``watched`` are refreshed with the folders (the permissions file,
permissions/watch.py): on the same timer and the same SIGHUP.

``ThreadRoleAuthenticator`` runs it in a thread the way pyzmq's
``ThreadAuthenticator`` does, and looks at the folders every
``check_interval`` seconds; ``reload()`` (SIGHUP) makes it reload every
folder now. ``start()`` binds the context's ZAP endpoint: one per context,
and it must run before any CURVE server socket binds, or libzmq lets every
key in.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import zmq
import zmq.asyncio
from zmq.auth.base import CURVE_ALLOW_ANY, VERSION, Authenticator
from zmq.auth.thread import AuthenticationThread
from zmq.utils import z85

from zmqflow.repeats import Repeats, since
from zmqflow.security.keys import PUBLIC_SUFFIX, KeyFileError, load_public

log = logging.getLogger("zmqflow.security")


Snapshot = tuple[tuple[str, int, int, int], ...] | None

KEY_NAME = "X-Key-Name"  # ZAP metadata: the allow-list file name of the peer's key


class Refreshable(Protocol):
    def refresh(self, force: bool = False) -> object: ...


def key_name(file_name: str) -> str:
    """A key's name: its allow-list file name without ``.key``."""
    return file_name.removesuffix(PUBLIC_SUFFIX)


def zap_metadata(properties: Mapping[str, str]) -> bytes:
    """ZAP reply metadata (ZMTP property format: name length, name, value length, value)."""
    out = bytearray()
    for name, value in properties.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += bytes([len(raw_name)]) + raw_name + struct.pack(">I", len(raw_value)) + raw_value
    return bytes(out)


def folder_snapshot(folder: Path) -> Snapshot:
    """What a folder's ``*.key`` files look like now (name, size, mtime, inode); None if gone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return None
    found = []
    for entry in entries:
        if entry.name.endswith(PUBLIC_SUFFIX):
            try:
                st = entry.stat()
            except OSError:
                continue  # removed while we looked
            found.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(found))


def load_allow_list(folder: Path) -> dict[bytes, str]:
    """Z85 public key -> file name for every usable ``*.key`` file in ``folder``.

    A file that cannot be used is skipped with a warning (the others still
    count); a folder that is gone allows nobody.
    """
    keys: dict[bytes, str] = {}
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(PUBLIC_SUFFIX))
    except OSError as exc:
        log.warning("allow-list %s unreadable (%s): nobody is allowed by it", folder, exc.strerror)
        return keys
    for name in names:
        try:
            keys[load_public(folder / name)] = name
        except KeyFileError as exc:
            log.warning("allow-list: %s; skipped", exc)
    return keys


class RoleAuthenticator(Authenticator):
    """pyzmq's Authenticator with a CURVE allow-list folder per ZAP domain (see module)."""

    def __init__(
        self,
        roles: Mapping[str, str | os.PathLike[str]],
        context: zmq.Context | None = None,
        watched: Sequence[Refreshable] = (),
    ) -> None:
        super().__init__(context, log=logging.getLogger("zmqflow.security.zap"))
        self.roles = {domain: Path(folder) for domain, folder in roles.items()}
        self.watched = list(watched)
        self._name = ""  # the key name of the request being answered, once allowed
        self.names: dict[str, dict[bytes, str]] = {}  # domain -> key -> file name
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._snapshots: dict[str, Snapshot] = {}
        self._peer = ""
        self._repeats = Repeats()  # one warning per key, address and domain a minute
        for domain, folder in self.roles.items():
            self.configure_curve(domain, folder)

    # --------------------------------------------------------- allow-lists
    def configure_curve(self, domain: str = "*", location: str | os.PathLike[str] = ".") -> None:
        """Load ``location``'s ``*.key`` files as ``domain``'s allow-list (replacing it)."""
        if location == CURVE_ALLOW_ANY:
            raise ValueError("the forwarder never allows any key")
        folder = Path(location)
        self._snapshots[domain] = folder_snapshot(folder)
        keys = load_allow_list(folder)
        before = self.names.get(domain)
        self.names[domain] = keys
        self.certs[domain] = dict.fromkeys(keys, True)
        if before is None:
            log.info("allow-list %s: %d keys from %s", domain, len(keys), folder)
            return
        added = [keys[k] for k in keys.keys() - before.keys()]
        removed = [before[k] for k in before.keys() - keys.keys()]
        if added or removed:
            log.info(
                "allow-list %s reloaded from %s: %d keys (added %s; removed %s)",
                domain,
                folder,
                len(keys),
                ", ".join(sorted(added)) or "none",
                ", ".join(sorted(removed)) or "none",
            )

    def refresh(self, force: bool = False) -> None:
        """Reload every folder whose ``*.key`` files changed (every folder if ``force``)."""
        for domain, folder in self.roles.items():
            if force or folder_snapshot(folder) != self._snapshots.get(domain):
                self.configure_curve(domain, folder)
        for item in self.watched:
            item.refresh(force)

    def domain_of(self, key: bytes) -> list[str]:
        """The domains whose allow-list holds this Z85 key."""
        return [domain for domain, keys in self.names.items() if key in keys]

    # ---------------------------------------------------------- decisions
    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) >= 6 and msg[0] == VERSION and msg[5] != b"CURVE":
            # Only CURVE sockets ask us; anything else is refused, never let through.
            address = msg[3].decode("utf-8", "replace")
            self._refused(msg[2].decode("utf-8", "replace"), "-", address, "not CURVE")
            self._send_zap_reply(msg[1], b"400", b"CURVE only")
            return
        self._peer = msg[3].decode("utf-8", "replace") if len(msg) >= 6 else "?"
        self._name = ""
        await super().handle_zap_message(msg)

    def _send_zap_reply(
        self,
        request_id: bytes,
        status_code: bytes,
        status_text: bytes,
        user_id: str = "anonymous",
    ) -> None:
        if status_code != b"200" or not self._name:
            super()._send_zap_reply(request_id, status_code, status_text, user_id)
            return
        # pyzmq's reply, with the key name as metadata the connection then carries
        self.zap_socket.send_multipart(
            [
                VERSION,
                request_id,
                status_code,
                status_text,
                user_id.encode(self.encoding, "replace"),
                zap_metadata({KEY_NAME: self._name}),
            ]
        )

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        key = z85.encode(client_key)
        if allowed:
            self.accepted[domain] += 1
            file_name = self.names.get(domain, {}).get(key, "")
            self._name = key_name(file_name)
            log.debug(
                "CURVE key %s from %s accepted for %s (%s)",
                key.decode(),
                self._peer,
                domain,
                file_name or "?",
            )
        else:
            elsewhere = [d for d in self.domain_of(key) if d != domain]
            why = reason.decode()
            if elsewhere:
                why += f" (a key of {', '.join(elsewhere)}: wrong role)"
            self._refused(domain, key.decode(), self._peer, why)
        return allowed, reason

    def _refused(self, domain: str, key: str, address: str, why: str) -> None:
        self.refused[domain] += 1
        quiet = self._repeats.due((key, address, domain), time.monotonic())
        if quiet is None:
            return
        log.warning(
            "refused CURVE key %s from %s for %s: %s%s",
            key,
            address or "?",
            domain,
            why,
            since(quiet),
        )


class _Thread(AuthenticationThread):
    """pyzmq's authentication thread, waking every ``check_interval`` to look at the folders."""

    authenticator: RoleAuthenticator

    def __init__(self, authenticator: RoleAuthenticator, pipe: zmq.Socket, interval: float):
        super().__init__(authenticator, pipe)
        self.name = "zmqflow-zap"
        self.interval = interval

    async def _run(self) -> None:
        auth, zap = self.authenticator, self.authenticator.zap_socket
        self.poller = zmq.asyncio.Poller()
        self.poller.register(self.pipe, zmq.POLLIN)
        self.poller.register(zap, zmq.POLLIN)
        self.started.set()
        next_check = time.monotonic() + self.interval
        while True:
            wait_ms = max(0, int((next_check - time.monotonic()) * 1000))
            events = dict(await self.poller.poll(wait_ms))
            if self.pipe in events and self._handle_pipe_message(self.pipe.recv_multipart()):
                return
            if zap in events:
                msg = zap.recv_multipart()
                try:
                    await auth.handle_zap_message(msg)
                except Exception:  # a bad request must not stop the only ZAP handler
                    log.exception("ZAP request not handled; refused")
                    if len(msg) >= 2:
                        auth._send_zap_reply(msg[1], b"500", b"internal error")
            if time.monotonic() >= next_check:
                self._refresh(force=False)
                next_check = time.monotonic() + self.interval

    def _refresh(self, force: bool) -> None:
        try:
            self.authenticator.refresh(force)
        except Exception:
            log.exception("allow-lists not reloaded; the previous ones stay")

    def _handle_pipe_message(self, msg: list[bytes]) -> bool:
        if msg[0] == b"RELOAD":
            self._refresh(force=True)
            return False
        return super()._handle_pipe_message(msg)


class ThreadRoleAuthenticator(RoleAuthenticator):
    """``RoleAuthenticator`` in a thread (pyzmq's ThreadAuthenticator shape)."""

    def __init__(
        self,
        roles: Mapping[str, str | os.PathLike[str]],
        context: zmq.Context | None = None,
        check_interval: float = 1.0,
        watched: Sequence[Refreshable] = (),
    ) -> None:
        super().__init__(roles, context, watched)
        self.check_interval = check_interval
        self.pipe: Any = None
        self.thread: _Thread | None = None

    def start(self) -> None:
        super().start()  # binds inproc://zeromq.zap.01
        self.pipe = self.context.socket(zmq.PAIR, socket_class=zmq.Socket)
        self.pipe.linger = 1
        endpoint = f"inproc://zmqflow-zap-{id(self)}"
        self.pipe.bind(endpoint)
        thread_pipe = self.context.socket(zmq.PAIR, socket_class=zmq.Socket)
        thread_pipe.linger = 1
        thread_pipe.connect(endpoint)
        self.thread = _Thread(self, thread_pipe, self.check_interval)
        self.thread.start()
        if not self.thread.started.wait(timeout=10):
            raise RuntimeError("ZAP thread failed to start")

    def reload(self) -> None:
        """Reload every allow-list (and ``watched``) now (from the thread that called ``start``)."""
        if self.pipe is not None:
            self.pipe.send(b"RELOAD")

    def stop(self) -> None:
        if self.pipe is not None:
            self.pipe.send(b"TERMINATE")
            if self.thread is not None and self.thread.is_alive():
                self.thread.join()
            self.thread = None
            self.pipe.close()
            self.pipe = None
        super().stop()
