"""Key files: ``zmqflow keys generate`` and the loaders' errors (security/keys.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

from zmqflow.security.keys import KeyFileError, generate, load_public, load_secret


def test_generate_writes_pyzmq_certificates_with_an_owner_only_secret(tmp_path: Path) -> None:
    written = generate(tmp_path / "keys", "forwarder", "client")
    names = sorted(p.name for p in written)
    assert names == ["client.key", "client.key_secret", "forwarder.key", "forwarder.key_secret"]
    for name in ("forwarder", "client"):
        public, secret = zmq.auth.load_certificate(tmp_path / "keys" / f"{name}.key_secret")
        assert secret is not None
        assert zmq.auth.load_certificate(tmp_path / "keys" / f"{name}.key") == (public, None)
        assert zmq.curve_public(secret) == public  # a real pair
        mode = stat.S_IMODE((tmp_path / "keys" / f"{name}.key_secret").stat().st_mode)
        assert mode == 0o600


def test_generate_never_overwrites_a_key_unless_forced(tmp_path: Path) -> None:
    generate(tmp_path, "a")
    before = load_public(tmp_path / "a.key")
    with pytest.raises(FileExistsError, match=r"a\.key"):
        generate(tmp_path, "a")
    assert load_public(tmp_path / "a.key") == before
    generate(tmp_path, "a", force=True)
    assert load_public(tmp_path / "a.key") != before


def test_generate_refuses_a_name_that_is_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad key name"):
        generate(tmp_path, "../evil")


def test_load_secret_returns_the_pair_and_load_public_the_public_key(tmp_path: Path) -> None:
    generate(tmp_path, "w")
    public, secret = load_secret(tmp_path / "w.key_secret")
    assert load_public(tmp_path / "w.key") == public
    assert load_public(tmp_path / "w.key_secret") == public
    assert zmq.curve_public(secret) == public


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ("curve\n", "no public-key line"),
        ('curve\n    public-key = "short"\n', "5 characters, not 40"),
        ('curve\n    public-key = "' + "~" * 40 + '"\n', "not valid Z85"),
    ],
)
def test_a_bad_key_file_names_the_file_and_the_fault(
    tmp_path: Path, content: str, fault: str
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text(content)
    with pytest.raises(KeyFileError, match=fault) as caught:
        load_public(bad)
    assert str(bad) in str(caught.value)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"nothere\.key_secret: missing"):
        load_secret(tmp_path / "nothere.key_secret")


def test_a_public_file_given_as_the_secret_says_so(tmp_path: Path) -> None:
    generate(tmp_path, "c")
    with pytest.raises(KeyFileError, match="no secret-key line"):
        load_secret(tmp_path / "c.key")


def test_cli_keys_generate_prints_what_it_wrote(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "zmqflow", "keys", "generate", str(tmp_path / "k"), "one", "two"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for name in ("one", "two"):
        public = load_public(tmp_path / "k" / f"{name}.key").decode()
        assert f"{tmp_path / 'k' / name}.key  public key {public}" in out
        assert f"{name}.key_secret  secret key, mode 0600" in out
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2
    assert "exists" in again.stderr
