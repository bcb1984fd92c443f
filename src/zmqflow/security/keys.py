"""CURVE key files: pyzmq's zmq.auth certificate format, written and read.

Contract: ``generate(dir, *names)`` writes ``DIR/NAME.key`` (public key) and
``DIR/NAME.key_secret`` (public and secret key) with
``zmq.auth.create_certificates``; the secret file is created readable by its
owner only (0600) and an existing key file is never overwritten unless
``force``. ``load_secret(path)`` returns ``(public, secret)`` and
``load_public(path)`` returns ``public``, both as Z85 bytes, the form
``zmq.CURVE_*KEY`` socket options take. Anything wrong with a file raises
``KeyFileError`` naming the file and what is wrong (missing, unreadable, no
public or secret key, not 40 characters of Z85).
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq.auth
from zmq.utils import z85

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and the fault,
    ``path`` is the file as it was given (the CLI names the setting that gave it)."""

    path: str | None = None


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or not set(name) <= _NAME_CHARS:
        raise ValueError(f"bad key name {name!r}: use letters, digits, '.', '_' or '-'")


def generate(directory: str | os.PathLike[str], *names: str, force: bool = False) -> list[Path]:
    """Write a key pair per name into ``directory`` (made if missing); the paths written.

    Raises ``FileExistsError`` if a file would be replaced and not ``force``:
    overwriting a key silently locks out whoever holds the old one.
    """
    folder = Path(directory)
    for name in names:
        _check_name(name)
        for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX):
            if (folder / f"{name}{suffix}").exists() and not force:
                raise FileExistsError(f"{folder / (name + suffix)} exists (force to replace it)")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        secret = folder / f"{name}{SECRET_SUFFIX}"
        secret.unlink(missing_ok=True)
        # Created 0600 from the start: no moment at which another user can read it.
        secret.touch(mode=0o600)
        public_file, secret_file = zmq.auth.create_certificates(folder, name)
        os.chmod(secret_file, 0o600)
        written += [Path(public_file), Path(secret_file)]
    return written


def _read(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        return _read_file(Path(path))
    except KeyFileError as exc:
        exc.path = os.fspath(path)
        raise


def _read_file(file: Path) -> tuple[bytes, bytes | None]:
    if not file.is_file():
        raise KeyFileError(f"key file {file}: missing" + (" (a folder)" if file.is_dir() else ""))
    try:
        public, secret = zmq.auth.load_certificate(file)
    except ValueError:
        raise KeyFileError(f"key file {file}: no public-key line") from None
    except OSError as exc:
        raise KeyFileError(f"key file {file}: unreadable ({exc.strerror or exc})") from None
    _check_z85(file, "public", public)
    if secret is not None:
        _check_z85(file, "secret", secret)
    return public, secret


def _check_z85(file: Path, which: str, key: bytes) -> None:
    if len(key) != 40:
        raise KeyFileError(
            f"key file {file}: the {which} key is {len(key)} characters, not 40 of Z85"
        )
    try:
        z85.decode(key)
    except Exception:  # KeyError for a character outside Z85, struct.error for overflow
        raise KeyFileError(f"key file {file}: the {which} key is not valid Z85") from None


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a ``NAME.key_secret`` file."""
    public, secret = _read(path)
    if secret is None:
        error = KeyFileError(
            f"key file {path}: no secret-key line (a public .key file? "
            f"give the {SECRET_SUFFIX} file)"
        )
        error.path = os.fspath(path)
        raise error
    return public, secret


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a ``NAME.key`` (or ``NAME.key_secret``) file."""
    return _read(path)[0]
