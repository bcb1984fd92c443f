"""CURVE on the connecting side: the keys a client or worker shows the forwarder.

Contract: ``CurveKeys`` holds a peer's own public and secret key and the
forwarder's public key, all Z85 bytes (the form ``zmq.CURVE_*KEY`` takes).
It is built from key files (``from_files``: the peer's ``NAME.key_secret``
and the forwarder's ``NAME.key``, pyzmq's zmq.auth format, read by
``security.keys``) or from Z85 text (``from_z85``: what an Airflow
connection or a Prefect block stores), and checked when built: a file that
cannot be used raises ``KeyFileError`` naming it; Z85 text that is not a
key, or a public key that does not belong to the secret key, raises
``ValueError`` naming the field. ``apply(sock)`` makes a socket a CURVE
client before it connects: once per socket, nothing per message.

``resolve(keys, secret_file, server_file)`` is the one rule every peer
follows: keys given win, then files given, then the files named by
ZMQFLOW_CURVE_SECRET and ZMQFLOW_CURVE_SERVER; ``None`` (plain) only when
nothing names a key. Half a pair (a secret file without the forwarder's
public key, or the other way round) is an error, never a silent plain
connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq
from zmq.utils import z85

from zmqflow.limits import curve_pair_rule
from zmqflow.security.keys import KeyFileError, load_public, load_secret

__all__ = ["CurveKeys", "KeyFileError", "resolve"]

PathLike = str | os.PathLike[str]


def _z85_key(field: str, value: str | bytes) -> bytes:
    key = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    key = key.strip()
    if len(key) != 40:
        raise ValueError(f"{field}: a CurveZMQ key in Z85 is 40 characters, not {len(key)}")
    try:
        z85.decode(key)
    except Exception:  # KeyError for a character outside Z85, struct.error for overflow
        raise ValueError(f"{field}: not a Z85 key") from None
    return key


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """A CURVE client's keys: its own pair and the forwarder's public key (Z85 bytes)."""

    public: bytes
    secret: bytes
    server: bytes

    def __repr__(self) -> str:  # never print a secret key into a log
        return f"CurveKeys(public={self.public_text!r}, server={self.server.decode()!r})"

    @property
    def public_text(self) -> str:
        """Our public key as the .key file writes it: how the forwarder's logs name us."""
        return self.public.decode()

    @classmethod
    def from_files(cls, secret_file: PathLike, server_file: PathLike) -> CurveKeys:
        """Our ``NAME.key_secret`` and the forwarder's ``NAME.key``; KeyFileError if unusable."""
        public, secret = load_secret(secret_file)
        return cls(public, secret, load_public(server_file))

    @classmethod
    def from_z85(
        cls,
        *,
        secret: str | bytes,
        server: str | bytes,
        public: str | bytes | None = None,
        names: tuple[str, str, str] = ("secret key", "server public key", "public key"),
    ) -> CurveKeys:
        """Keys from Z85 text; ``public`` is derived from ``secret`` when not given.

        ``names`` are the fields' names in the caller's terms (a connection's
        field names, say), for the error message.
        """
        secret_key = _z85_key(names[0], secret)
        server_key = _z85_key(names[1], server)
        derived = zmq.curve_public(secret_key)
        if public is not None and _z85_key(names[2], public) != derived:
            raise ValueError(f"{names[2]}: does not belong to the {names[0]}")
        return cls(derived, secret_key, server_key)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the forwarder (before it connects)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server


def resolve(
    keys: CurveKeys | None = None,
    secret_file: PathLike | None = None,
    server_file: PathLike | None = None,
) -> CurveKeys | None:
    """Keys given, else files given, else ZMQFLOW_CURVE_SECRET/SERVER; None: plain."""
    if keys is not None:
        if secret_file is not None or server_file is not None:
            raise ValueError("give CURVE keys or key files, not both")
        return keys
    if secret_file is None and server_file is None:
        from zmqflow.settings import CurvePeerSettings  # settings import nothing of ours

        env = CurvePeerSettings()
        secret_file, server_file = env.curve_secret, env.curve_server
        where = ("ZMQFLOW_CURVE_SECRET", "ZMQFLOW_CURVE_SERVER")
    else:
        where = ("curve_secret (--curve-secret)", "curve_server (--curve-server)")
    if not curve_pair_rule(secret_file, server_file, where):
        return None
    assert secret_file is not None and server_file is not None
    return CurveKeys.from_files(secret_file, server_file)
