"""The README's production runbook, followed literally against gunicorn and nginx started here (issue 14).

An operator following the runbook once took every webhook down: ``kill -USR2`` re-executes gunicorn with the
environment it was first started with, so after ``rotate-key`` the new workers still had only the old key (234
of 234 webhooks answered 500); the restart waited for "Booting worker", which comes before the app is loaded,
and lost deliveries; behind a load balancer every client was 127.0.0.1. Here, while signed webhooks arrive
steadily through nginx over TLS, the test deploys a migration (``flask db upgrade``, then
``python -m wizard.restart``), rotates the encryption key through ``WIZARD_ENCRYPTION_KEY_FILE`` and
``flask rotate-key``, and restarts again. Every webhook must be answered 200 within LINE's 2 s and stored once.

Bounded: one gunicorn and one nginx per test, a restart takes the app's import time (about 10 s on a busy
2-core machine), every wait polls with a deadline and says what it waited for.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from cryptography.fernet import Fernet

from tests import topology
from tests.test_migrations import logging_kept  # noqa: F401  (the fixture: alembic's env.py resets logging)
from tests.webhooks import ROOT, encode, make_channel, sign, text_event
from wizard import create_app
from wizard.extensions import db
from wizard.models import Channel, WebhookEvent

LINE_WAITS = 2.0
FLASK = str(Path(sys.executable).parent / "flask")
PASSWORD = "correct horse battery"

MIGRATION = '''"""The runbook test's deploy: a column on the busiest table, as a real release adds one."""
import sqlalchemy as sa
from alembic import op

revision = "runbook0001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("runbook_note", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("runbook_note")
'''


def _reset_postgresql(url):
    """The test's own PostgreSQL database, empty (the migrations and the queue make their tables)."""
    from sqlalchemy import create_engine
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


def _flask(env, *args, timeout=180):
    """``flask --app wizard …`` as the README writes it, in the repository, with the machine's environment."""
    done = subprocess.run([FLASK, "--app", "wizard", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"flask {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _restart(env):
    """The documented rolling restart; returns the new master's pid."""
    done = subprocess.run([sys.executable, "-m", "wizard.restart", "--timeout", "150"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restarted: gunicorn master" in done.stdout, done.stdout
    return int(done.stdout.rsplit(" ", 1)[1])


def _replace(path, text):
    """As the runbook says: write the new file beside the old one and move it over (atomic)."""
    Path(f"{path}.new").write_text(text)
    os.replace(f"{path}.new", path)


@pytest.fixture
def site(db_url, tmp_path, logging_kept):  # noqa: F811  (the fixture imported above)
    """One web machine as the README sets it up: the environment, ``db upgrade``, gunicorn, nginx over TLS."""
    if db_url.startswith("postgresql"):
        _reset_postgresql(db_url)
    tls_port, gunicorn_port = topology.free_port(), topology.free_port()
    old_key = Fernet.generate_key().decode()
    key_file = tmp_path / "encryption_key"
    key_file.write_text(old_key + "\n")
    env = {
        "WIZARD_INSTANCE_PATH": str(tmp_path / "instance"), "WIZARD_DATABASE_URL": db_url,
        "WIZARD_PUBLIC_BASE_URL": f"https://127.0.0.1:{tls_port}", "WIZARD_SECRET_KEY": uuid.uuid4().hex,
        "WIZARD_ENCRYPTION_KEY_FILE": str(key_file), "WIZARD_MAIL_URL": f"file://{tmp_path / 'mail'}",
        "WIZARD_LINE_API_HOST": "http://127.0.0.1:9",  # nothing here may call LINE
        "WIZARD_QUEUE_NAME": f"runbook-{uuid.uuid4().hex[:8]}", "WIZARD_PIDFILE": str(tmp_path / "gunicorn.pid"),
        "WIZARD_BIND": f"127.0.0.1:{gunicorn_port}",
    }
    if db_url.startswith("postgresql"):
        env["WEB_CONCURRENCY"] = "2"
    app = create_app({name[len("WIZARD_"):]: value for name, value in env.items() if name.startswith("WIZARD_")})
    from flask_migrate import upgrade
    from wizard.accounts import create_shop, create_user
    with app.app_context():
        upgrade()  # what `flask --app wizard db upgrade` does (the deploy below runs the command itself)
        create_user("owner@example.com", PASSWORD)
        create_shop("runbook", "Runbook", "owner@example.com")
        db.session.commit()
    channel = make_channel(app, "runbook")
    certificate, key = topology.self_signed_certificate(tmp_path)
    (tmp_path / "nginx").mkdir()
    conf = topology.render_nginx_conf(tmp_path / "nginx", http_port=topology.free_port(), tls_port=tls_port,
                                      upstream=f"127.0.0.1:{gunicorn_port}", certificate=certificate, key=key)
    log = open(tmp_path / "gunicorn.log", "wb")
    gunicorn = topology.start_gunicorn(env, gunicorn_port, log=log)
    try:
        nginx = topology.start_nginx(conf, tls_port)
    except Exception:
        topology.stop_group(gunicorn.pid)
        raise
    try:
        yield SimpleNamespace(env=env, app=app, channel=channel, key_file=key_file, old_key=old_key,
                              url=env["WIZARD_PUBLIC_BASE_URL"], certificate=str(certificate), tmp_path=tmp_path,
                              log=tmp_path / "gunicorn.log")
    finally:
        topology.stop(nginx)
        topology.stop_group(gunicorn.pid)  # the master now serving is another process of the same group
        gunicorn.wait(timeout=30)
        log.close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        if db_url.startswith("postgresql"):
            _reset_postgresql(db_url)


class Traffic:
    """LINE, delivering signed webhooks steadily through nginx: ``senders`` threads, each a new connection
    per delivery (as LINE opens them), one new event each. Records (status, seconds, event id, phase, request
    id): the runbook's step under way when the delivery was sent (``phase``, set by the test), and the one it
    ended in if that was another, so a slow or failed delivery names the step that made it so; nginx's request
    id finds its lines in nginx's and gunicorn's logs (``timings``)."""

    def __init__(self, site, senders=2, pause=0.1):
        self.site, self.pause = site, pause
        self.answers, self.stopping = [], threading.Event()
        self.phase = "steady"
        self.threads = [threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(senders)]

    def _send(self, sender):
        channel, endpoint = self.site.channel, self.site.url + self.site.channel["path"]
        number = 0
        while not self.stopping.is_set():
            number += 1
            event = text_event("U" + uuid.uuid4().hex, f"sender {sender} message {number}")
            body = encode({"destination": channel["bot_user_id"], "events": [event]})
            started, phase = time.monotonic(), self.phase
            request_id = None
            try:
                answer = requests.post(endpoint, data=body, verify=self.site.certificate, timeout=10, headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "x-line-signature": sign(channel["secret"], body)})
                status, request_id = answer.status_code, answer.headers.get("X-Request-Id")
            except requests.RequestException as exc:
                status = type(exc).__name__
            if self.phase != phase:
                phase = f"{phase} → {self.phase}"
            self.answers.append((status, round(time.monotonic() - started, 3), event["webhookEventId"], phase,
                                 request_id))
            time.sleep(self.pause)

    def step(self, phase):
        """The runbook's next step begins: deliveries sent from now on are recorded under ``phase``."""
        self.phase = phase

    def slowest_per_phase(self):
        """{phase: (deliveries, slowest seconds)}, in the order the phases came."""
        phases = {}
        for _, seconds, _, phase, _ in self.answers:
            count, slowest = phases.get(phase, (0, 0.0))
            phases[phase] = (count + 1, max(slowest, seconds))
        return phases

    def timings(self, request_id):
        """What nginx (request_time: all of it; upstream_time: gunicorn's part) and gunicorn logged for one
        delivery: where its time went."""
        if request_id is None:
            return "no answer, so no request id"
        lines = [line for log in (self.site.tmp_path / "nginx" / "access.log", self.site.log)
                 for line in log.read_text(errors="replace").splitlines() if request_id in line]
        return " | ".join(lines) or f"{request_id} is in neither log"

    def wait_for(self, more, seconds=60):
        """Until ``more`` further deliveries were answered (whatever the answer)."""
        target, deadline = len(self.answers) + more, time.monotonic() + seconds
        while len(self.answers) < target:
            assert time.monotonic() < deadline, f"only {len(self.answers)} of {target} deliveries in {seconds} s"
            time.sleep(0.1)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=20)


def _readyz(site):
    response = requests.get(site.url + "/readyz", verify=site.certificate, timeout=10)
    return response.status_code, response.json()


def _migrations_with_a_new_release(site):
    """wizard/migrations plus one revision after today's head: what `db upgrade` meets on a deploy."""
    from alembic.script import ScriptDirectory
    directory = site.tmp_path / "migrations"
    shutil.copytree(ROOT / "wizard" / "migrations", directory, ignore=shutil.ignore_patterns("__pycache__"))
    (head,) = ScriptDirectory(str(directory)).get_heads()
    (directory / "versions" / "runbook0001_release.py").write_text(MIGRATION.format(head=head))
    return directory


def test_the_production_runbook_under_steady_signed_webhooks(site):
    new_key = Fernet.generate_key().decode()
    first_master = int(Path(site.env["WIZARD_PIDFILE"]).read_text())
    with Traffic(site) as traffic:
        traffic.wait_for(10)

        # Key rotation: NEW beside OLD everywhere, NEW first everywhere, rotate-key, then NEW alone. Each
        # running process reads the key file again when it changes; nothing is restarted for it.
        traffic.step("key file: old, new")
        _replace(site.key_file, f"{site.old_key},{new_key}\n")
        traffic.wait_for(5)
        traffic.step("key file: new, old")
        _replace(site.key_file, f"{new_key},{site.old_key}\n")
        traffic.wait_for(5)
        traffic.step("flask rotate-key")
        rotated = _flask(site.env, "rotate-key")
        assert "channels.secret_encrypted: 1 re-encrypted" in rotated, rotated
        traffic.wait_for(5)
        traffic.step("key file: new")
        _replace(site.key_file, f"{new_key}\n")
        traffic.wait_for(10)
        assert _readyz(site) == (200, {"database": "ok", "queue": "ok", "keys": "ok"})

        # Deploying: `flask db upgrade` while the old code serves, then the new code without a gap. The new
        # workers start with NEW alone, from the file: the environment gunicorn re-executes with holds only
        # the file's path, never a key.
        traffic.step("flask db upgrade")
        _flask(site.env, "db", "upgrade", "--directory", str(_migrations_with_a_new_release(site)))
        traffic.step("after the upgrade")
        traffic.wait_for(5)
        traffic.step("wizard.restart")
        second_master = _restart(site.env)
        traffic.step("after the restart")
        traffic.wait_for(20)

    answers = traffic.answers
    phases = "; ".join(f"{phase}: {count} deliveries, slowest {slowest} s"
                       for phase, (count, slowest) in traffic.slowest_per_phase().items())
    failed = [answer for answer in answers if answer[0] != 200]
    assert failed == [], f"{len(failed)} of {len(answers)} deliveries not answered 200: {failed[:10]} ({phases})"
    slowest = max(answers, key=lambda answer: answer[1])
    assert slowest[1] < LINE_WAITS, (f"slowest delivery {slowest[1]} s, sent during {slowest[3]!r}, of "
                                     f"{len(answers)}: {phases}; its log lines: {traffic.timings(slowest[4])}")
    assert second_master != first_master
    with site.app.app_context():
        stored = db.session.scalars(db.select(WebhookEvent.webhook_event_id)
                                    .where(WebhookEvent.channel_id == site.channel["id"])).all()
        columns = {column["name"] for column in db.inspect(db.engine).get_columns("webhook_events")}
        secret_encrypted = db.session.get(Channel, site.channel["id"]).secret_encrypted
        db.session.remove()
    assert sorted(stored) == sorted(answer[2] for answer in answers), "lost or doubled deliveries"
    assert "runbook_note" in columns  # the release's migration ran
    assert Fernet(new_key.encode()).decrypt(secret_encrypted.encode()).decode() == site.channel["secret"]
    assert _readyz(site) == (200, {"database": "ok", "queue": "ok", "keys": "ok"})
    print(f"runbook: {len(answers)} deliveries, all 200; {phases}")


class _From(requests.adapters.HTTPAdapter):
    """Connections from one loopback address (all of 127/8 is this machine): a client at its own address."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs, source_address=(self.address, 0))


def _browser(url, certificate, address):
    web = requests.Session()
    web.verify, web.trust_env = certificate, False
    web.mount("https://", _From(address))
    web.headers["Referer"] = url + "/"  # as a browser posts a form over https
    return web


def _sign_in(web, url, email, password, **headers):
    page = web.get(url + "/login?lang=en", timeout=30)
    token = page.text.split('name="csrf_token"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    return web.post(url + "/login?lang=en", allow_redirects=False, timeout=30, headers=headers,
                    data={"email": email, "password": password, "csrf_token": token}).status_code


@contextlib.contextmanager
def _behind_the_balancer(tmp_path):
    """deploy/loadbalancer.conf → deploy/nginx.conf → gunicorn with WIZARD_TRUSTED_PROXIES=2, the first of the
    two web machines down; staff@example.com and a shop (sunny-bakery) exist. Yields the balancer's URL and
    the certificate's path."""
    from wizard.accounts import create_shop, create_user
    balancer_port, machine_port, gunicorn_port = topology.free_port(), topology.free_port(), topology.free_port()
    url = f"https://127.0.0.1:{balancer_port}"
    env = {"WIZARD_INSTANCE_PATH": str(tmp_path / "instance"), "WIZARD_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
           "WIZARD_PUBLIC_BASE_URL": url, "WIZARD_SECRET_KEY": uuid.uuid4().hex,
           "WIZARD_ENCRYPTION_KEY": Fernet.generate_key().decode(), "WIZARD_MAIL_URL": f"file://{tmp_path / 'mail'}",
           "WIZARD_LINE_API_HOST": "http://127.0.0.1:9", "WIZARD_TRUSTED_PROXIES": "2"}
    app = create_app({name[len("WIZARD_"):]: value for name, value in env.items() if name.startswith("WIZARD_")})
    with app.app_context():
        db.create_all()
        create_user("staff@example.com", PASSWORD, True)
        create_user("owner@example.com", PASSWORD)
        create_shop("sunny-bakery", "晴天烘焙坊", "owner@example.com")
        db.session.commit()
        db.engine.dispose()
    certificate, key = topology.self_signed_certificate(tmp_path)
    machine_dir, balancer_dir = tmp_path / "machine", tmp_path / "balancer"
    machine_dir.mkdir()
    machine_conf = topology.render_nginx_conf(machine_dir, http_port=topology.free_port(), tls_port=machine_port,
                                              upstream=f"127.0.0.1:{gunicorn_port}", certificate=certificate,
                                              key=key)
    balancer_conf = topology.render_loadbalancer_conf(
        balancer_dir, tls_port=balancer_port, certificate=certificate, key=key, trusted=certificate,
        machines=(f"127.0.0.1:{topology.free_port()}", f"127.0.0.1:{machine_port}"))  # the first one is down
    processes = []
    try:
        with open(tmp_path / "gunicorn.log", "wb") as log:
            processes.append(topology.start_gunicorn(env, gunicorn_port, log=log))
        processes.append(topology.start_nginx(machine_conf, machine_port))
        processes.append(topology.start_nginx(balancer_conf, balancer_port))
        yield url, str(certificate)
    finally:
        for process in reversed(processes):
            topology.stop(process)


def test_behind_the_load_balancer_one_address_guessing_passwords_does_not_lock_out_another(tmp_path):
    """The app must see each client's own address: with nginx's old `X-Forwarded-For $remote_addr` every client
    was 127.0.0.1, and one address guessing passwords locked out staff elsewhere. The guesser also writes the
    staff's address into X-Forwarded-For itself; that entry must count for nothing."""
    with _behind_the_balancer(tmp_path) as (url, certificate):
        guesser = _browser(url, certificate, "127.0.0.5")
        refused = [_sign_in(guesser, url, f"guess{n}@example.com", "wrong password", **{
            "X-Forwarded-For": "127.0.0.6"}) for n in range(22)]
        staff = _browser(url, certificate, "127.0.0.6")
        assert _sign_in(staff, url, "staff@example.com", PASSWORD) == 302
    assert set(refused) <= {200, 429} and refused[0] == 200, refused  # wrong passwords: the form again, or wait


def test_behind_the_load_balancer_a_3_mb_photo_reaches_the_template_builder(tmp_path):
    """Both nginx configurations take 11 MB on the template builder's pages (1 MB elsewhere): a 3 MB phone photo
    is uploaded and served back as LINE fetches it; 12 MB gets the app's page, in the owner's language."""
    from tests.test_production import _noise_jpeg
    with _behind_the_balancer(tmp_path) as (url, certificate):
        owner = _browser(url, certificate, "127.0.0.7")
        assert _sign_in(owner, url, "owner@example.com", PASSWORD) == 302
        builder = f"{url}/c/sunny-bakery/templates/new"
        page = owner.get(builder + "?lang=en", timeout=30).text
        token = page.split('name="csrf_token"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
        form = {"csrf_token": token, "name": "照片", "messages-0-kind": "image", "action": "preview"}
        response = owner.post(builder, data=form, timeout=60,
                              files={"messages-0-image": ("photo.jpg", _noise_jpeg(3), "image/jpeg")})
        assert response.status_code == 200, response.text[:500]
        address = response.text.split('name="messages-0-url" value="', 1)[1].split('"', 1)[0]
        assert address.startswith(f"{url}/media/")
        served = requests.get(address, verify=certificate, timeout=10)
        assert served.status_code == 200 and served.headers["Content-Type"] == "image/jpeg"
        response = owner.post(builder, data=form, timeout=60,
                              files={"messages-0-image": ("huge.jpg", os.urandom(12 * 1024 * 1024), "image/jpeg")})
        assert response.status_code == 413 and "This picture is too large" in response.text, response.text[:500]
        response = owner.post(f"{url}/c/sunny-bakery/contacts", data={"x": "y" * (2 * 1024 * 1024)}, timeout=60)
        assert response.status_code == 413  # elsewhere 1 MB, as before


def test_a_restart_whose_new_workers_cannot_start_is_backed_out_and_systemd_learns_the_new_master(tmp_path):
    """A key file broken before a restart: the new workers never answer, so the new master is stopped and the
    old one keeps serving. Fixed, the restart goes through and tells systemd (NOTIFY_SOCKET) the new main pid."""
    import socket
    port, key = topology.free_port(), Fernet.generate_key().decode()
    key_file = tmp_path / "encryption_key"
    key_file.write_text(key)
    env = {"WIZARD_INSTANCE_PATH": str(tmp_path / "instance"), "WIZARD_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
           "WIZARD_SECRET_KEY": uuid.uuid4().hex, "WIZARD_ENCRYPTION_KEY_FILE": str(key_file),
           "WIZARD_LINE_API_HOST": "http://127.0.0.1:9", "WIZARD_PIDFILE": str(tmp_path / "gunicorn.pid")}
    app = create_app({name[len("WIZARD_"):]: value for name, value in env.items() if name.startswith("WIZARD_")})
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    with open(tmp_path / "gunicorn.log", "wb") as log:
        gunicorn = topology.start_gunicorn(env, port, log=log)
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(str(tmp_path / "notify"))
    notifications.settimeout(5)
    try:
        _replace(key_file, "not a key\n")
        failed = subprocess.run([sys.executable, "-m", "wizard.restart", "--timeout", "60"], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "keeps serving" in failed.stderr and str(gunicorn.pid) in failed.stderr, failed.stderr
        assert int(Path(env["WIZARD_PIDFILE"]).read_text()) == gunicorn.pid
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["keys"] == "ok"

        _replace(key_file, key)
        new_master = _restart({**env, "NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notifications.recv(100).decode() == f"MAINPID={new_master}"
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    finally:
        notifications.close()
        topology.stop_group(gunicorn.pid)
        gunicorn.wait(timeout=30)
