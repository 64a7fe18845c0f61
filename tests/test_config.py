"""Configuration order (defaults → instance/config.py → WIZARD_* variables) and the embedded default."""
import os
import re
import runpy
import signal
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.webhooks import ROOT
from wizard import create_app
from wizard.config import DEFAULTS


def test_embedded_default_uses_sqlite_and_the_sandbox(tmp_path, monkeypatch):
    for name in ("WIZARD_DATABASE_URL", "WIZARD_LINE_API_HOST", "WIZARD_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'wizard.db'}"
    assert app.config["SANDBOX"] is True
    assert app.config["LINE_API_HOST"] == "http://127.0.0.1:5001"
    # Generated once, kept in instance/, reused on the next start.
    key = app.config["SECRET_KEY"]
    assert (tmp_path / "secret_key").read_text() == key
    assert create_app({"INSTANCE_PATH": str(tmp_path)}).config["SECRET_KEY"] == key
    assert (tmp_path / "encryption_key").stat().st_mode & 0o077 == 0


def test_environment_beats_instance_config_and_turns_the_sandbox_off(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text("PUBLIC_BASE_URL = 'https://from-instance.example.com'\n"
                                        "LINE_TIMEOUT = 4\n")
    monkeypatch.setenv("WIZARD_PUBLIC_BASE_URL", "https://crm.example.com/")
    monkeypatch.setenv("WIZARD_DATABASE_URL", "postgresql+psycopg://db.example.com/crm")
    _deployment_keys(monkeypatch)
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["PUBLIC_BASE_URL"] == "https://crm.example.com"
    assert app.config["LINE_TIMEOUT"] == 4
    assert app.config["SANDBOX"] is False
    assert app.config["LINE_API_HOST"] is None  # the real LINE Platform
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_sandbox_flag_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARD_SANDBOX", "off")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SANDBOX"] is False and app.config["LINE_API_HOST"] is None


def test_a_public_address_on_sqlite_means_real_line_not_the_sandbox(tmp_path, monkeypatch):
    """A small production on the default SQLite file must still talk to LINE and get the HTTPS warnings."""
    for name in ("WIZARD_DATABASE_URL", "WIZARD_LINE_API_HOST", "WIZARD_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WIZARD_PUBLIC_BASE_URL", "https://crm.example.com")
    _deployment_keys(monkeypatch)
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SANDBOX"] is False and app.config["LINE_API_HOST"] is None


PRODUCTION = {
    "WIZARD_DATABASE_URL": "postgresql+psycopg://crm@db.example.com/crm",
    "WIZARD_PUBLIC_BASE_URL": "https://crm.example.com",
    "WIZARD_SECRET_KEY": "s" * 64,
    "WIZARD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "WIZARD_MAIL_URL": "smtp+starttls://wizard:secret@mail.example.com:587",
}


def _deployment_keys(monkeypatch):
    """A deployment states its keys and its mail server (it does not start without them)."""
    for name in ("WIZARD_SECRET_KEY", "WIZARD_ENCRYPTION_KEY", "WIZARD_MAIL_URL"):
        monkeypatch.setenv(name, PRODUCTION[name])


def _sample_path(rule):
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "1234567890", rule.rule)


def test_production_talks_to_the_real_line_platform_and_serves_no_sandbox(tmp_path, monkeypatch):
    """``gunicorn wsgi:app`` with the README's production variables: LINE calls go to api.line.me, and none of
    the sandbox's paths (LINE's API imitation, its control page and JSON API) is answered by the app."""
    from wizard.line.client import client_with
    from wizard.sandbox import create_sandbox_app
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WIZARD_INSTANCE_PATH", str(tmp_path / "instance"))

    app = runpy.run_path(str(ROOT / "wsgi.py"))["app"]  # the production entry point, imported afresh

    assert app.config["SANDBOX"] is False
    with app.app_context():
        client = client_with("1234567890", "0" * 32)
    # No host given to line-bot-sdk means its own default, https://api.line.me: the real LINE Platform.
    assert (client.host, repr(client)) == (None, "<LineClient channel 1234567890 at api.line.me>")

    sandbox_app = create_sandbox_app(f"sqlite:///{tmp_path / 'sandbox.db'}")
    sandbox_rules = [rule for rule in sandbox_app.url_map.iter_rules() if rule.rule != "/"]
    assert len(sandbox_rules) > 20  # LINE's API paths, the control pages, the control API
    web = app.test_client()
    for rule in sandbox_rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = web.open(_sample_path(rule), method=method)
            assert response.status_code == 404, (method, rule.rule, response.status_code)
    # "/" is the CRM's own start page (sign in), not the sandbox's control page.
    home = web.get("/")
    assert (home.status_code, home.headers["Location"]) == (302, "/login")
    sandbox_app.control.close()


@pytest.mark.parametrize("name, value, line_host", [
    ("WIZARD_DATABASE_URL", "postgresql+psycopg://crm@db.example.com/crm", None),
    ("WIZARD_PUBLIC_BASE_URL", "https://crm.example.com", None),
    ("WIZARD_LINE_API_HOST", "https://api.line.me", "https://api.line.me"),
])
def test_any_one_sign_of_a_real_deployment_turns_the_sandbox_off(tmp_path, monkeypatch, name, value,
                                                                   line_host):
    """A database server, a public address or a LINE host: each alone means LINE calls must not go to the
    sandbox on 127.0.0.1:5001."""
    from wizard.line.client import client_with
    monkeypatch.setenv(name, value)
    _deployment_keys(monkeypatch)
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    with app.app_context():
        client = client_with("1234567890", "0" * 32)
    assert (app.config["SANDBOX"], client.host) == (False, line_host)


def test_the_dev_server_refuses_to_start_outside_the_embedded_default(tmp_path):
    """``make run`` starts the sandbox beside the app; with production settings it must stop at once."""
    env = {**os.environ, **PRODUCTION, "WIZARD_INSTANCE_PATH": str(tmp_path / "instance"),
           "WIZARD_DATABASE_URL": f"sqlite:///{tmp_path / 'crm.db'}"}
    started = subprocess.run([sys.executable, "-m", "wizard.devserver"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 1, started.stdout + started.stderr
    assert "The dev server is for the embedded default (WIZARD_SANDBOX on)." in started.stderr
    assert "LINE sandbox" not in started.stdout


def test_no_module_keeps_its_own_fallback_for_a_setting():
    """config.DEFAULTS is the one place for defaults: ``config.get("X", fallback)`` elsewhere would let a
    module disagree with it (``line worker`` once polled every 1 s where the configuration says 5)."""
    private = []
    for path in sorted((ROOT / "wizard").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "wizard" or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for name in re.findall(r"config\.get\(\s*[\"']([A-Z_]+)[\"']\s*,", line):
                private.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert private == []


@pytest.mark.parametrize("command, setting, threads", [
    (["worker"], {}, DEFAULTS["WORKER_THREADS"]),
    (["line", "worker"], {"WIZARD_WORKER_THREADS": "2"}, 2),  # the name issue 2 gave it still works
])
def test_the_queue_consumer_runs_as_configured_and_stops_on_sigterm(app, command, setting, threads):
    """``flask worker`` is huey's consumer on the queue beside the database, WORKER_THREADS threads."""
    env = {**os.environ, "WIZARD_DATABASE_URL": app.config["DATABASE_URL"],
           "WIZARD_INSTANCE_PATH": app.instance_path, "WIZARD_SECRET_KEY": app.config["SECRET_KEY"],
           "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"], "WIZARD_SANDBOX": "0",
           "WIZARD_LINE_API_HOST": app.config["LINE_API_HOST"], **setting}
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wizard", *command], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = worker.stdout.readline()
        worker.send_signal(signal.SIGTERM)  # as systemd or docker stop would
        rest, errors = worker.communicate(timeout=30)
    finally:
        worker.kill()
    from wizard.queue import describe_queue
    with app.app_context():
        where = describe_queue(app)
    assert first == f"Queue consumer running ({threads} threads, queue {where}); Ctrl+C stops it.\n", errors
    assert rest == "Queue consumer stopped.\n", errors
    assert worker.returncode == 0
