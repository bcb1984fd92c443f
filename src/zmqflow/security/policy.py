"""The forwarder's security policy: CURVE with roles on every bound socket, or plain on purpose.

Contract: ``ForwarderSecurity.from_settings(settings, ctx)`` decides the mode
and raises ``SecurityConfigError`` (or ``KeyFileError``) with a message that
says what to give instead, before anything binds:

- CURVE (``curve_secret`` given): ``allow_clients`` and ``allow_workers``
  must name existing folders (an empty one is a warning: keys can be added
  while running). ``start()`` starts the ZAP handler (a
  ``ThreadRoleAuthenticator``); only then may sockets bind.
  ``secure(sock, role)`` makes a socket a CURVE server in its role's ZAP
  domain with ZMQ_ZAP_ENFORCE_DOMAIN on: ``CLIENTS`` (frontend and the event
  bus) or ``WORKERS`` (backend). A key is let into a domain only if its
  role's folder holds it.
- plain (no ``curve_secret``): refused if any tcp endpoint binds a wildcard
  or non-loopback address, unless ``insecure``; loopback tcp, ipc and
  inproc bind with a warning. Allow-list folders without a secret key are
  an error, never silently ignored.

``bind(sock, endpoint)`` binds with the ipc socket file created 0660 (owner
and group; never other users). ``watch(sockets)`` starts the handshake
monitor (CURVE, or plain at DEBUG). ``reload()`` re-reads the allow-lists
now (SIGHUP); they are also re-read within ``check_interval`` of a change.

Permissions (``permissions`` setting, a file: security/permissions/): read
once here (a file that cannot be used stops the forwarder, naming its
line), then re-read by the ZAP thread with the allow-lists, on change and
on SIGHUP. They need CURVE (a plain peer has no key name): a file without
``curve_secret`` is an error. ``rules()`` is the ``Permissions`` in force
now (``Permissions.open()``, everything allowed, without a file); a peer's
key name is its messages' ``X-Key-Name`` property (authenticator.KEY_NAME).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import zmq

from zmqflow.security.authenticator import ThreadRoleAuthenticator
from zmqflow.security.keys import load_secret
from zmqflow.security.monitor import HandshakeMonitor
from zmqflow.security.permissions import Permissions, PermissionsFile
from zmqflow.settings import ForwarderSettings

log = logging.getLogger("zmqflow.security")

CLIENTS = "zmqflow.clients"  # ZAP domain of the frontend and the event bus
WORKERS = "zmqflow.workers"  # ZAP domain of the backend
_IPC_UMASK = 0o117  # socket files rw for owner and group only


class SecurityConfigError(ValueError):
    """Settings that would leave the forwarder open, or name a folder that is not there."""


def tcp_exposure(endpoint: str) -> str:
    """'local' (ipc, inproc, loopback tcp), 'wildcard' or 'network' (any other tcp host)."""
    if not endpoint.startswith("tcp://"):
        return "local"
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host in ("*", ""):
        return "wildcard"
    if host in ("localhost", "lo"):
        return "local"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "network"  # an interface or host name: assume it is reachable
    if address.is_unspecified:
        return "wildcard"
    return "local" if address.is_loopback else "network"


def _endpoints(s: ForwarderSettings) -> list[str]:
    return [*s.frontend, *s.backend, *s.events_in, *s.events_out, *getattr(s, "streams", [])]


def _folder(option: str, value: str | None) -> Path:
    flag = "--" + option.replace("_", "-")
    env = "ZMQFLOW_" + option.upper()
    if value is None:
        raise SecurityConfigError(
            f"{flag} DIR ({env}) is needed with --curve-secret: the folder of public keys "
            f"(NAME.key) allowed in that role; without it nobody could use that side"
        )
    folder = Path(value)
    if not folder.is_dir():
        raise SecurityConfigError(f"{flag} {folder}: not a folder")
    keys = sorted(folder.glob("*.key"))
    if not keys:
        log.warning(
            "%s %s holds no *.key file: nobody gets in there until a key is copied in", flag, folder
        )
    return folder


class ForwarderSecurity:
    def __init__(
        self,
        ctx: zmq.Context,
        keys: tuple[bytes, bytes] | None = None,
        roles: dict[str, Path] | None = None,
        check_interval: float = 1.0,
        permissions: PermissionsFile | None = None,
    ) -> None:
        self.ctx = ctx
        self.keys = keys
        self.permissions = permissions
        watched = [permissions] if permissions is not None else []
        self.auth = (
            ThreadRoleAuthenticator(roles or {}, ctx, check_interval, watched) if keys else None
        )
        self.monitor: HandshakeMonitor | None = None
        self._open = Permissions.open()

    def rules(self) -> Permissions:
        """The permissions in force now (everything allowed without a file)."""
        return self.permissions.current if self.permissions is not None else self._open

    @property
    def curve(self) -> bool:
        return self.keys is not None

    @classmethod
    def from_settings(cls, s: ForwarderSettings, ctx: zmq.Context) -> ForwarderSecurity:
        # getattr: the setting arrives with the broker's wiring (docs/security.md#permissions)
        permissions_path = getattr(s, "permissions", None)
        if s.curve_secret is None:
            if permissions_path is not None:
                raise SecurityConfigError(
                    f"--permissions {permissions_path} given without --curve-secret "
                    "(ZMQFLOW_CURVE_SECRET): permissions grant key names, and only CURVE "
                    "peers have one"
                )
            cls._check_plain(s)
            return cls(ctx)
        if s.insecure:
            log.warning("--insecure has no effect with --curve-secret: every socket uses CURVE")
        keys = load_secret(s.curve_secret)
        roles = {
            CLIENTS: _folder("allow_clients", s.allow_clients),
            WORKERS: _folder("allow_workers", s.allow_workers),
        }
        log.info(
            "CURVE on every socket: server key %s; clients from %s, workers from %s",
            keys[0].decode(),
            roles[CLIENTS],
            roles[WORKERS],
        )
        permissions = None
        if permissions_path is not None:
            permissions = PermissionsFile(permissions_path)  # PermissionsError: file and line
        elif "permissions" in type(s).model_fields:
            log.warning(
                "no --permissions file: every client key may submit to every service, collect "
                "any task and read every topic, and every worker key may serve any service"
            )
        return cls(ctx, keys, roles, permissions=permissions)

    @staticmethod
    def _check_plain(s: ForwarderSettings) -> None:
        given = [n for n in ("allow_clients", "allow_workers") if getattr(s, n) is not None]
        if given:
            flags = " and ".join("--" + n.replace("_", "-") for n in given)
            raise SecurityConfigError(
                f"{flags} given without --curve-secret (ZMQFLOW_CURVE_SECRET): allow-lists "
                "need CURVE; give the forwarder's NAME.key_secret file too"
            )
        exposed = [ep for ep in _endpoints(s) if tcp_exposure(ep) != "local"]
        if exposed and not s.insecure:
            raise SecurityConfigError(
                f"refusing to bind {', '.join(exposed)} without CURVE: anyone who reaches "
                "it could submit tasks, or register as a worker and be handed other people's "
                "tasks. Give --curve-secret FILE --allow-clients DIR --allow-workers DIR "
                "(ZMQFLOW_CURVE_SECRET, ...; see docs/security.md), or --insecure "
                "(ZMQFLOW_INSECURE=true) to run plain on purpose; loopback tcp and ipc "
                "endpoints need neither"
            )
        if exposed:
            log.warning(
                "plain mode on purpose (--insecure): %s open to anyone who reaches it, "
                "no encryption, no keys",
                ", ".join(exposed),
            )
        else:
            log.warning(
                "no --curve-secret: plain ZeroMQ on loopback and ipc only (local development)"
            )

    # ------------------------------------------------------------ sockets
    def start(self) -> None:
        """Start the ZAP handler: before any CURVE socket binds (or every key gets in)."""
        if self.auth is not None:
            self.auth.start()

    def secure(self, sock: zmq.Socket, domain: str) -> None:
        """Make ``sock`` a CURVE server of ``domain`` (before it binds); nothing when plain."""
        if self.keys is None:
            return
        if self.auth is None or self.auth.zap_socket is None:
            raise RuntimeError("start() the ZAP handler before binding CURVE sockets")
        sock.curve_publickey, sock.curve_secretkey = self.keys
        sock.curve_server = True
        sock.zap_domain = domain.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    @staticmethod
    def bind(sock: zmq.Socket, endpoint: str) -> None:
        """``sock.bind(endpoint)``; an ipc socket file is made rw for owner and group only."""
        if not endpoint.startswith("ipc://"):
            sock.bind(endpoint)
            return
        path = endpoint[len("ipc://") :]
        if path.startswith("@"):  # abstract: no file; the network namespace bounds it
            sock.bind(endpoint)
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        old = os.umask(_IPC_UMASK)
        try:
            sock.bind(endpoint)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)  # whatever the umask did, say it once more

    def watch(self, sockets: dict[str, zmq.Socket]) -> None:
        """Log handshakes and disconnects of these sockets (see monitor.py)."""
        if self.curve or log.isEnabledFor(logging.DEBUG):
            self.monitor = HandshakeMonitor(self.ctx, sockets)
            self.monitor.start()

    def reload(self) -> None:
        """Re-read the allow-lists now (SIGHUP)."""
        if self.auth is None:
            log.info("reload asked for: plain mode has no allow-lists")
            return
        log.info("reloading the allow-lists")
        self.auth.reload()

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        if self.auth is not None:
            self.auth.stop()
