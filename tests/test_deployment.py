"""A deployment's settings checked at start, and keys a running process can change (issue 14, items 11, 21, 22).

A machine without the deployment's keys once started with keys of its own, said /readyz 200 and answered every
webhook 500; a deployment without MAIL_URL kept every invitation as a file on whichever machine sent it. Both now
refuse to start. The keys may live in a file that running processes re-read when it changes: how a key rotation
reaches gunicorn's workers, whose environment ``kill -USR2`` never changes (tests/test_runbook.py runs that).
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests import topology
from tests.webhooks import ROOT, make_channel
from wizard import create_app
from wizard.config import ConfigError

DEPLOYMENT = {"PUBLIC_BASE_URL": "https://crm.example.com", "SECRET_KEY": "s" * 64,
              "ENCRYPTION_KEY": Fernet.generate_key().decode(), "MAIL_URL": "smtp://mail.example.com:25"}


def _deployment(tmp_path, **changes):
    config = {"INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": f"sqlite:///{tmp_path / 'crm.db'}",
              **DEPLOYMENT, **changes}
    return create_app({name: value for name, value in config.items() if value is not None})


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ENCRYPTION_KEY"])
def test_a_deployment_without_its_keys_refuses_to_start_and_makes_none(tmp_path, missing):
    with pytest.raises(ConfigError, match=f"WIZARD_{missing} not set"):
        _deployment(tmp_path, **{missing: None})
    assert not (tmp_path / "instance" / missing.lower()).exists()


def test_gunicorn_without_the_encryption_key_exits_at_once_saying_what_is_missing(tmp_path):
    env = {"WIZARD_INSTANCE_PATH": str(tmp_path / "instance"), "WIZARD_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
           "WIZARD_PUBLIC_BASE_URL": DEPLOYMENT["PUBLIC_BASE_URL"], "WIZARD_SECRET_KEY": DEPLOYMENT["SECRET_KEY"],
           "WIZARD_MAIL_URL": DEPLOYMENT["MAIL_URL"]}
    with open(tmp_path / "gunicorn.log", "wb") as log, pytest.raises(RuntimeError, match="gunicorn exited") as failed:
        topology.start_gunicorn(env, topology.free_port(), log=log)
    assert "WIZARD_ENCRYPTION_KEY not set" in str(failed.value)


def test_the_embedded_default_still_makes_its_own_keys(tmp_path):
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SANDBOX"] and (tmp_path / "encryption_key").exists() and (tmp_path / "secret_key").exists()


def test_a_key_that_is_not_a_fernet_key_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="Key 2 of WIZARD_ENCRYPTION_KEY is not a Fernet key"):
        _deployment(tmp_path, ENCRYPTION_KEY=DEPLOYMENT["ENCRYPTION_KEY"] + ",not-a-key")


def test_a_deployment_without_mail_settings_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="WIZARD_MAIL_URL is not set"):
        _deployment(tmp_path, MAIL_URL=None)
    with pytest.raises(ConfigError, match="MAIL_URL must be smtp://"):
        _deployment(tmp_path, MAIL_URL="smtp:/mail.example.com")


def test_a_staging_system_keeps_mail_as_files_only_when_it_says_so(tmp_path):
    from wizard import mail
    app = _deployment(tmp_path, MAIL_URL=f"file://{tmp_path / 'mails'}")
    with app.app_context():
        from wizard.extensions import db
        db.create_all()
        row = mail.send("owner@example.com", "Hello", "Body", kind="invitation")
        assert (row.transport, row.error) == ("file", None)
    assert [path.suffix for path in (tmp_path / "mails").iterdir()] == [".eml"]


def test_readyz_fails_when_the_key_cannot_decrypt_what_is_stored(app, make_shop):
    """A machine with another key, or left behind by a rotation, would answer every webhook 500."""
    slug, _ = make_shop()
    make_channel(app, slug)
    stored_under = app.config["ENCRYPTION_KEY"]
    other = Fernet.generate_key().decode()
    keys = ("INSTANCE_PATH", "DATABASE_URL", "SECRET_KEY", "LINE_API_HOST", "PUBLIC_BASE_URL", "QUEUE_URL",
            "QUEUE_NAME", "TESTING")

    def readyz(key):
        machine = create_app({**{name: app.config[name] for name in keys}, "SANDBOX": False, "ENCRYPTION_KEY": key})
        response = machine.test_client().get("/readyz")
        return response.status_code, response.json

    assert readyz(other) == (503, {"database": "ok", "queue": "ok", "keys": "cannot decrypt"})
    assert readyz(f"{other},{stored_under}") == (200, {"database": "ok", "queue": "ok", "keys": "ok"})


def test_a_changed_key_file_reaches_a_running_process_without_a_restart(app, tmp_path, make_shop):
    """ENCRYPTION_KEY_FILE is read again when it changes: what a key rotation relies on."""
    from wizard import crypto
    from wizard.extensions import db
    from wizard.models import Channel
    old, new = app.config["ENCRYPTION_KEY"], Fernet.generate_key().decode()
    key_file = tmp_path / "encryption_key"
    key_file.write_text(old + "\n")
    keys = ("INSTANCE_PATH", "DATABASE_URL", "SECRET_KEY", "LINE_API_HOST", "PUBLIC_BASE_URL", "TESTING")
    machine = create_app({**{name: app.config[name] for name in keys}, "SANDBOX": False,
                          "ENCRYPTION_KEY": None, "ENCRYPTION_KEY_FILE": str(key_file)})
    slug, _ = make_shop()
    channel = make_channel(app, slug)

    def replace_key_file(text):  # as the runbook says: a new file moved over the old one
        (tmp_path / "next").write_text(text)
        os.replace(tmp_path / "next", key_file)

    with machine.app_context():
        replace_key_file(f"{new},{old}\n")
        stored = db.session.get(Channel, channel["id"])
        assert stored.secret == channel["secret"]  # still readable: OLD is the second key
        stored.secret = channel["secret"]  # written under NEW, the file's first key
        db.session.commit()
        assert Fernet(new.encode()).decrypt(stored.secret_encrypted.encode()).decode() == channel["secret"]
        key_file.write_text("")  # half-written in place: the keys read before stay
        assert crypto.keys() == [new, old]
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY_FILE"):
        create_app({**{name: app.config[name] for name in keys}, "SANDBOX": False, "ENCRYPTION_KEY": None,
                    "ENCRYPTION_KEY_FILE": str(key_file)})


def test_the_queue_consumer_without_the_keys_refuses_to_start(tmp_path):
    env = {**os.environ, "WIZARD_INSTANCE_PATH": str(tmp_path), "WIZARD_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
           "WIZARD_PUBLIC_BASE_URL": DEPLOYMENT["PUBLIC_BASE_URL"], "WIZARD_MAIL_URL": DEPLOYMENT["MAIL_URL"]}
    started = subprocess.run([sys.executable, "-m", "flask", "--app", "wizard", "worker"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "WIZARD_SECRET_KEY and WIZARD_ENCRYPTION_KEY not set" in started.stderr


def test_the_shipped_systemd_units_are_valid_and_run_the_documented_commands(tmp_path):
    """deploy/systemd/: `systemd-analyze verify` accepts them (paths pointed at this checkout), the web unit
    reloads with the restart command and lets it name the new main process."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    units = []
    for name in ("wizard-web.service", "wizard-worker.service"):
        text = (ROOT / "deploy" / "systemd" / name).read_text()
        assert "/opt/line-connect-wizard" in text
        (tmp_path / name).write_text(text.replace("/opt/line-connect-wizard", str(ROOT)))
        units.append(str(tmp_path / name))
    checked = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    web = (tmp_path / "wizard-web.service").read_text()
    assert f"ExecReload={ROOT}/.venv/bin/python -m wizard.restart" in web
    assert "NotifyAccess=all" in web and "Environment=WIZARD_PIDFILE=/run/wizard/gunicorn.pid" in web
    assert f"ExecStart={ROOT}/.venv/bin/flask --app wizard worker" in (tmp_path / "wizard-worker.service").read_text()


def test_the_sandbox_runs_as_a_server_for_a_staging_system(tmp_path):
    """deploy/README.md's command for a staging LINE: the wizard (LINE_API_HOST pointing at it) checks a channel
    created on its control API, through line-bot-sdk over HTTP."""
    import requests
    from wizard.line.client import client_with
    port = topology.free_port()
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    command = (ROOT / "deploy" / "README.md").read_text().split("sudo -u wizard .venv/bin/gunicorn ", 1)[1]
    command = command.split("\n```", 1)[0].replace("\\\n", " ").split()
    assert command[:5] == ["-c", "/dev/null", "-k", "gthread", "--threads"], command
    command = [gunicorn, *command[:6], "-b", f"127.0.0.1:{port}",
               f"wizard.sandbox:create_sandbox_app(\"sqlite:///{tmp_path / 'sandbox.db'}\")"]
    server = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                channel = requests.post(f"http://127.0.0.1:{port}/_sandbox/api/channels", json={}, timeout=5).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "the sandbox server did not start"
                time.sleep(0.3)
        app = _deployment(tmp_path, LINE_API_HOST=f"http://127.0.0.1:{port}", MAIL_URL="file://")
        with app.app_context():
            assert client_with(channel["channelId"], channel["channelSecret"]).bot_info()["userId"] == \
                channel["botUserId"]
    finally:
        topology.stop(server)
