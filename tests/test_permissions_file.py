"""The permissions file: errors naming file and line, re-read on change and on
SIGHUP with the allow-lists, the client-key grant editor, and the key name a
CURVE connection carries (X-Key-Name) on loopback."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import zmq
from fabric import wait_for
from security_fabric import Keys

from zmqflow.security.authenticator import KEY_NAME, ThreadRoleAuthenticator
from zmqflow.security.keys import load_secret
from zmqflow.security.permissions import PermissionsError, PermissionsFile, load, parse
from zmqflow.security.permissions.grants import main as grants_main
from zmqflow.security.permissions.grants import parse_spec, set_key
from zmqflow.security.policy import CLIENTS, WORKERS, ForwarderSecurity, SecurityConfigError
from zmqflow.settings import ForwarderSettings

STACK_FILE = Path(__file__).parent.parent / "services" / "forwarder" / "permissions.toml"


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    return Keys(folder)


# ------------------------------------------------------------- parse errors
@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ('[keys.a]\nsubmit = ["ok"\n', "p.toml:2", "not valid TOML"),
        ('\n\n[keys.a]\nsbmit = ["x"]\n', "p.toml:4", "unknown field 'sbmit'"),
        ('[keys.a]\nsubmit = [\n  "ok",\n  "air*flow",\n]\n', "p.toml:4", "'*' and '>'"),
        ('[keys.a]\nsubmit = ["a..b"]\n', "p.toml:2", "empty segment"),
        ('[keys.a]\nadmin = "yes"\n', "p.toml:2", "keys.a.admin"),
        ('[keys.a]\ngroups = ["nope"]\n', "p.toml:2", "no group 'nope'"),
        ('[keys."a b"]\n', "p.toml:1", "not a name"),
        ("[keyz.a]\n", "p.toml:1", "unknown field 'keyz'"),
        ('[groups.g]\ngroups = ["h"]\n', "p.toml:2", "unknown field 'groups'"),  # no nesting
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_line(text: str, where: str, says: str) -> None:
    with pytest.raises(PermissionsError) as caught:
        parse(text, "p.toml")
    message = str(caught.value)
    assert message.startswith(f"{where}:"), message
    assert says in message


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PermissionsError, match=r"nope\.toml: cannot be read"):
        load(tmp_path / "nope.toml")


def test_the_stack_file_grants_what_the_stack_needs() -> None:
    rules = load(STACK_FILE)
    demo = ("echo", "sleep", "sha256", "rollup")
    for service in demo:
        for key in ("airflow", "prefect", "host-example"):
            assert rules.may_submit(key, service), (key, service)
        for worker in ("worker-python", "worker-rust"):
            assert rules.may_serve(worker, service)
    assert rules.may_submit("airflow", "airflow.default")
    assert not rules.may_submit("prefect", "airflow.default")
    assert rules.may_submit("prefect", "prefect.task")
    assert not rules.may_submit("airflow", "prefect.task")
    assert not rules.may_serve("worker-rust", "airflow.default")
    assert not rules.may_serve("worker-python", "prefect.task")
    assert rules.may_serve("worker-airflow", "airflow.default")
    assert not rules.may_serve("worker-airflow", "echo")
    assert rules.may_serve("worker-prefect", "prefect.task")
    assert not rules.may_serve("worker-prefect", "prefect.other")
    for key in ("airflow", "prefect"):
        assert rules.may_publish(key, "data.ready")
        assert rules.may_subscribe(
            key, "data.ready"
        )  # Airflow's trigger subscribes <env>.data.ready
    assert rules.may_publish("airflow", "pipeline.rollup.complete")  # zmqflow_on_event's last task
    assert rules.may_publish("prefect", "prefect.flow-run.completed")  # the Prefect bridge
    assert rules.may_subscribe("prefect", "worker.")  # the bridge's kinds: data., worker.
    assert rules.may_subscribe("events-log", "worker.")
    assert not rules.may_submit("events-log", "echo")
    assert rules.sees_all("forwarder-health") and not rules.is_admin("forwarder-health")
    assert not rules.may_submit("host-example", "airflow.default")


# ------------------------------------------------------------- reloads
def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # as an editor or client-key.sh does: a whole file at once


def test_a_changed_file_is_taken_and_a_broken_one_keeps_the_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "permissions.toml"
    _write(path, '[keys.a]\nsubmit = ["echo"]\n')
    watched = PermissionsFile(path)
    assert not watched.refresh()  # unchanged: not read again
    assert not watched.current.may_submit("b", "echo")
    _write(path, '[keys.a]\nsubmit = ["echo"]\n[keys.b]\nsubmit = ["echo"]\n')
    with caplog.at_level(logging.INFO, "zmqflow.security"):
        assert watched.refresh()
    assert watched.current.may_submit("b", "echo")
    assert "changed: b" in caplog.text
    caplog.clear()
    _write(path, '# moved down a line\n[keys.a]\nsubmit = ["echo"]\n[keys.b]\nsubmit = ["echo"]\n')
    with caplog.at_level(logging.INFO, "zmqflow.security"):
        assert watched.refresh()
    assert "changed: nothing" in caplog.text
    _write(path, '[keys.a]\nsubmit = ["echo"\n')  # a half-saved edit
    with caplog.at_level(logging.ERROR, "zmqflow.security"):
        assert not watched.refresh()
    assert "previous ones stay in force" in caplog.text and "permissions.toml:2" in caplog.text
    assert watched.current.may_submit("b", "echo") and watched.failures == 1
    path.unlink()
    assert not watched.refresh() and watched.current.may_submit("a", "echo")


def test_a_broken_file_at_start_stops_the_forwarder_naming_the_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text('[keys.a]\nsubmit = ["x.>.y"]\n')
    with pytest.raises(PermissionsError, match=r"permissions\.toml:2: keys\.a\.submit\[0\]"):
        PermissionsFile(path)


def test_the_zap_thread_rereads_the_file_on_change_and_on_reload(
    tmp_path: Path, keys: Keys
) -> None:
    path = tmp_path / "permissions.toml"
    _write(path, "[keys.client]\n")
    watched = PermissionsFile(path)
    ctx = zmq.Context()
    auth = ThreadRoleAuthenticator(
        {CLIENTS: keys.allow_clients, WORKERS: keys.allow_workers},
        ctx,
        check_interval=0.05,
        watched=[watched],
    )
    auth.start()
    try:
        _write(path, '[keys.client]\nsubmit = ["echo"]\n')
        wait_for(lambda: watched.current.may_submit("client", "echo"), "the grant, by the timer")
        # the same size and mtime second cannot hide an edit from a forced reload (SIGHUP)
        path.write_text('[keys.client]\nsubmit = ["echx"]\n')
        auth.reload()
        wait_for(lambda: watched.current.may_submit("client", "echx"), "the grant, by reload()")
    finally:
        auth.stop()
        ctx.term()


# ------------------------------------------------------------- the grant editor
def test_a_grant_spec_becomes_an_entry() -> None:
    assert parse_spec("") == {"groups": ["demo-clients"]}
    assert parse_spec("submit=airflow.>,echo publish=data.> admin=true groups=ops") == {
        "groups": ["ops"],
        "submit": ["airflow.>", "echo"],
        "publish": ["data.>"],
        "admin": True,
    }
    for bad, says in (
        ("sbmit=x", "unknown field"),
        ("submit", "FIELD=VALUE"),
        ("submit=a*", "'*'"),
    ):
        with pytest.raises(PermissionsError, match=says):
            parse_spec(bad)


def test_set_key_replaces_only_that_key_and_keeps_the_rest() -> None:
    text = (
        '# the stack\'s grants\n[groups.demo-clients]\nsubmit = ["echo"]\n\n'
        '[keys.me]\nsubmit = ["old"]\n\n# next\n[keys.other]\nstatus = true\n'
    )
    new = set_key(text, "me", parse_spec("submit=reports.*"))
    assert "# the stack's grants" in new and "# next" in new and '"old"' not in new
    rules = parse(new)
    assert rules.may_submit("me", "reports.daily") and rules.may_submit("me", "echo")
    assert rules.sees_all("other")
    added = set_key(new, "new.app", parse_spec(""))
    assert '[keys."new.app"]' in added and parse(added).may_submit("new.app", "echo")
    assert set_key("", "solo", parse_spec("groups= submit=echo")) == (
        '[keys.solo]\nsubmit = ["echo"]\n'
    )


def test_set_key_never_returns_a_file_that_would_not_load() -> None:
    with pytest.raises(PermissionsError, match="no group 'demo-clients'"):
        set_key("", "me", parse_spec(""))  # the default group is not defined there
    with pytest.raises(PermissionsError, match="edit it by hand"):
        set_key('keys = { me = { submit = ["x"] } }\n', "me", parse_spec("groups="))


def test_the_grant_editor_command_prints_the_new_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(STACK_FILE, tmp_path / "p.toml")
    assert grants_main([str(tmp_path / "p.toml"), "ci", "submit=airflow.>"]) == 0
    rules = parse(capsys.readouterr().out)
    assert rules.may_submit("ci", "airflow.default") and rules.may_submit("ci", "echo")
    assert grants_main([str(tmp_path / "p.toml"), "ci", "bad"]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err


# ------------------------------------------------------------- key names on the wire
def test_a_curve_connection_carries_its_key_name_on_every_message(keys: Keys) -> None:
    """The answer to "how does the forwarder learn a peer's key name": the
    ZAP handler puts it in the connection's metadata (User-Id stays Z85)."""
    shutil.copy(keys.public("client2"), keys.allow_clients / "host-app.key")
    ctx = zmq.Context()
    security = ForwarderSecurity(
        ctx,
        load_secret(keys.secret("forwarder")),
        {CLIENTS: keys.allow_clients, WORKERS: keys.allow_workers},
    )
    security.start()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    security.secure(router, CLIENTS)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    peers = []
    try:
        seen = {}
        for name, file_name in (("client", "client"), ("client2", "host-app")):
            dealer = ctx.socket(zmq.DEALER)
            dealer.linger = 0
            peers.append(dealer)
            public, secret = load_secret(keys.secret(name))
            dealer.curve_publickey, dealer.curve_secretkey = public, secret
            dealer.curve_serverkey = keys.server
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send(b"hello")
            assert router.poll(20_000)
            rid, body = router.recv_multipart(copy=False)
            seen[file_name] = (rid.get(KEY_NAME), body.get(KEY_NAME), rid.get("User-Id"))
            assert seen[file_name][2] == public.decode()  # User-Id: the Z85 key, as before
        assert seen["client"][:2] == ("client", "client")
        assert seen["host-app"][:2] == ("host-app", "host-app")
    finally:
        for sock in (*peers, router):
            sock.close(linger=0)
        security.stop()
        ctx.term()


# ------------------------------------------------------------- the forwarder's policy
class _WiredSettings(ForwarderSettings):
    """ForwarderSettings with the ``permissions`` field the broker wiring adds."""

    permissions: str | None = None


def test_the_policy_reads_the_file_once_wired_and_refuses_it_without_curve(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text('[keys.client]\nsubmit = ["echo"]\n')
    ctx = zmq.Context()
    try:
        with pytest.raises(SecurityConfigError, match="without --curve-secret"):
            ForwarderSecurity.from_settings(
                _WiredSettings(frontend=["ipc:///tmp/x"], permissions=str(path)), ctx
            )
        curve = {
            "curve_secret": str(keys.secret("forwarder")),
            "allow_clients": str(keys.allow_clients),
            "allow_workers": str(keys.allow_workers),
        }
        secured = ForwarderSecurity.from_settings(
            _WiredSettings(**curve, permissions=str(path)), ctx
        )
        assert secured.rules().enforcing and secured.rules().may_submit("client", "echo")
        assert not secured.rules().may_submit("client", "sleep")
        with caplog.at_level(logging.WARNING, "zmqflow.security"):
            open_ = ForwarderSecurity.from_settings(_WiredSettings(**curve), ctx)
        assert not open_.rules().enforcing and "no --permissions file" in caplog.text
        path.write_text('[keys.client]\nsubmit = ["echo"\n')
        with pytest.raises(PermissionsError, match=r"permissions\.toml:2"):
            ForwarderSecurity.from_settings(_WiredSettings(**curve, permissions=str(path)), ctx)
    finally:
        ctx.term()
