"""The README's production command, for real: ``gunicorn wsgi:app`` (gunicorn.conf.py) behind deploy/nginx.conf.

Issue 7: under one sync worker the wizard's Verify could never succeed (LINE's call to our webhook waited
behind the owner's own request), one client sending a byte a second took the webhook offline, and a slow
LINE answer to one shop's page stalled every other shop's webhook. Here the sandbox plays LINE over real
HTTP and calls the webhook through nginx over TLS (a certificate made for 127.0.0.1, which the sandbox is
told to trust), and the webhook must answer within LINE's 2 s while, all at once, 50 clients trickle a
request a byte a second into nginx and the sandbox answers another shop's calls 5 s late.

Bounded: the slow clients trickle for 9 s (below nginx's 10 s client_header_timeout, so they are still
holding their connections when the last webhook is timed); every request has a timeout.
"""
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from tests import topology
from tests.conftest import ENCRYPTION_KEY
from tests.webhooks import encode, sign, text_event
from wizard import create_app
from wizard.extensions import db
from wizard.models import Shop, WebhookEvent

LINE_WAITS = 2.0            # LINE gives up on a webhook after 2 s
SLOW_CLIENTS = 50
TRICKLE_SECONDS = 9
SLOW_PAGES = 8              # owners of the slow shop loading its page at once
SANDBOX_DELAY = 5.0
PASSWORD = "correct horse"


def _prepare_database(db_url, tmp_path, base_url, sandbox):
    """Fresh tables and two shops with their owners, written by an app configured as gunicorn's will be."""
    from wizard.accounts import create_shop, create_user
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": db_url,
                      "SECRET_KEY": "production-test", "ENCRYPTION_KEY": ENCRYPTION_KEY,
                      "LINE_API_HOST": sandbox.url, "SANDBOX": False, "PUBLIC_BASE_URL": base_url,
                      "MAIL_URL": f"file://{tmp_path / 'mail'}"})
    with app.app_context():
        db.drop_all()
        db.create_all()
        for slug in ("shop-a", "shop-b"):
            create_user(f"owner-{slug}@example.com", PASSWORD)
            create_shop(slug, slug.title(), f"owner-{slug}@example.com")
        db.session.commit()
    return app


@pytest.fixture
def production(db_url, sandbox, tmp_path, monkeypatch):
    """gunicorn and nginx as the README starts them, the sandbox as LINE; torn down after the test."""
    from wizard.sandbox import deliver
    gunicorn_port, http_port, tls_port = topology.free_port(), topology.free_port(), topology.free_port()
    base_url = f"https://127.0.0.1:{tls_port}"
    certificate, key = topology.self_signed_certificate(tmp_path)
    # LINE trusts public certificates; this sandbox trusts the test's one.
    monkeypatch.setattr(deliver, "_http", urllib3.PoolManager(retries=False, num_pools=20,
                                                              ca_certs=str(certificate)))
    app = _prepare_database(db_url, tmp_path, base_url, sandbox)
    env = {
        "WIZARD_INSTANCE_PATH": str(tmp_path / "instance"), "WIZARD_DATABASE_URL": db_url,
        "WIZARD_PUBLIC_BASE_URL": base_url, "WIZARD_LINE_API_HOST": sandbox.url,
        "WIZARD_SECRET_KEY": "production-test", "WIZARD_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "WIZARD_MAIL_URL": f"file://{tmp_path / 'mail'}",  # a deployment says where mail goes (no SMTP here)
        # Every page asks LINE (no cached answer), and Verify may be pressed twice within a minute.
        "WIZARD_CHECK_MAX_AGE": "0", "WIZARD_WEBHOOK_TEST_COOLDOWN": "0",
    }
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    conf = topology.render_nginx_conf(nginx_dir, http_port=http_port, tls_port=tls_port,
                                      upstream=f"127.0.0.1:{gunicorn_port}", certificate=certificate, key=key)
    with open(tmp_path / "gunicorn.log", "wb") as log:
        gunicorn = topology.start_gunicorn(env, gunicorn_port, log=log)
    try:
        nginx = topology.start_nginx(conf, tls_port)
    except Exception:
        topology.stop(gunicorn)
        raise
    try:
        yield SimpleNamespace(url=base_url, tls_port=tls_port, certificate=str(certificate), app=app,
                              sandbox=sandbox, log=tmp_path / "gunicorn.log", env=env,
                              gunicorn_port=gunicorn_port, nginx_log=nginx_dir / "access.log")
    finally:
        topology.stop(nginx)
        topology.stop(gunicorn)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


class Owner:
    """A shop owner's browser, as far as the server can tell: cookies, CSRF tokens, forms posted over https."""

    def __init__(self, env, slug):
        self.env, self.slug = env, slug
        self.web = requests.Session()
        self.web.verify = env.certificate
        self.web.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, wins over the session's certificate
        # Over https Flask-WTF accepts a form only with a Referer of our own origin, as a browser sends it.
        self.web.headers["Referer"] = env.url + "/"

    def _token(self, path):
        page = self.web.get(self.env.url + path, timeout=30)
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)

    def sign_in(self):
        response = self.web.post(self.env.url + "/login?lang=en", allow_redirects=False, timeout=10, data={
            "email": f"owner-{self.slug}@example.com", "password": PASSWORD,
            "csrf_token": self._token("/login?lang=en")})
        assert response.status_code == 302, response.text[:500]
        self.token = self._token("/?lang=en")

    def act(self, step, **form):
        response = self.web.post(f"{self.env.url}/setup/{self.slug}/{step}?lang=en", timeout=30,
                                 data={"csrf_token": self.token, **form})
        assert response.status_code == 200, response.text[:500]
        return response

    def step(self, key):
        status = self.web.get(f"{self.env.url}/api/v1/shops/{self.slug}/status", timeout=30).json()
        return next(step for step in status["steps"] if step["key"] == key)

    def connect(self, channel):
        self.act("credentials", action="save", channel_id=channel["channelId"],
                 channel_secret=channel["channelSecret"])
        self.act("webhook_url", action="set_endpoint")

    def copy(self):
        """Another tab of the same owner (requests sessions are not shared across threads)."""
        other = Owner(self.env, self.slug)
        other.web.cookies.update(self.web.cookies)
        return other


def _verify(owner, channel):
    """Press Verify (LINE calls our webhook while the owner's request waits); True if LINE got its 200."""
    before = len(_line_tests(owner.env, channel))
    owner.act("webhook_url", action="test")
    tests = _line_tests(owner.env, channel)
    assert len(tests) == before + 1
    return tests[0]["success"] and owner.step("webhook_url")["reason"] == "webhook_verified", tests[0]


def _line_tests(env, channel):
    return [d for d in env.sandbox.control.deliveries(channel["channelId"]) if d["kind"] == "test"]


def _deliver(env, channel):
    """One signed webhook with a new event, as LINE sends it on a new connection: (status, seconds)."""
    body = encode({"destination": channel["botUserId"], "events": [text_event("U" + "0" * 32, "hi")]})
    started = time.monotonic()
    response = requests.post(env.sandbox.control.channel(channel["channelId"])["endpoint"], data=body,
                             verify=env.certificate, timeout=10,
                             headers={"Content-Type": "application/json; charset=utf-8",
                                      "x-line-signature": sign(channel["channelSecret"], body)})
    return response.status_code, time.monotonic() - started


class SlowClients:
    """``count`` TLS connections to nginx, each sending a webhook request's head one byte a second."""

    def __init__(self, port, count, seconds):
        self.port, self.count, self.seconds = port, count, seconds
        self.open_at_end = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        head = b"POST /line/webhook/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sockets = []
        try:
            for _ in range(self.count):
                sockets.append(context.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=5)))
            for second in range(self.seconds):
                for sock in list(sockets):
                    try:
                        sock.sendall(head[second:second + 1])
                    except OSError:
                        sockets.remove(sock)
                time.sleep(1)
            self.open_at_end = len(sockets)
        finally:
            for sock in sockets:
                sock.close()

    def __enter__(self):
        self.started_at = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=self.seconds + 15)


def _load_slow_pages(owner, count):
    """``count`` tabs of the slow shop's page at once; returns (thread list, list of seconds each took)."""
    seconds = []

    def load(tab):
        started = time.monotonic()
        tab.web.get(f"{owner.env.url}/setup/{owner.slug}/credentials", timeout=60)
        seconds.append(time.monotonic() - started)

    threads = [threading.Thread(target=load, args=(owner.copy(),), daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, seconds


def _stored_events(app, channel_id):
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug="shop-a"))
        assert shop.channel.channel_id == channel_id
        count = db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)
                                  .where(WebhookEvent.channel_id == shop.channel.id))
        db.session.remove()
        return count


def test_verify_succeeds_and_the_webhook_answers_in_time_under_slow_clients_and_a_slow_line(production):
    env = production
    channel_a, channel_b = env.sandbox.control.create_channel(), env.sandbox.control.create_channel()
    owner_a, owner_b = Owner(env, "shop-a"), Owner(env, "shop-b")
    for owner, channel in ((owner_a, channel_a), (owner_b, channel_b)):
        owner.sign_in()
        owner.connect(channel)

    verified, test = _verify(owner_a, channel_a)
    assert verified, test

    env.sandbox.control.fail(channel_b["channelId"], None, delay=SANDBOX_DELAY)
    answers = []
    with SlowClients(env.tls_port, SLOW_CLIENTS, TRICKLE_SECONDS) as slow:
        pages, page_seconds = _load_slow_pages(owner_b, SLOW_PAGES)
        time.sleep(1.5)  # the slow clients are connected, shop B's pages wait on LINE
        verified_under_load, test_under_load = _verify(owner_a, channel_a)
        while len(answers) < 8:
            answers.append(_deliver(env, channel_a))
            time.sleep(0.3)
        busy_until = time.monotonic()
        # LINE is quick again: the pages still waiting finish their current call and need no more time.
        env.sandbox.control.heal(channel_b["channelId"])
        for thread in pages:
            thread.join(timeout=60)

    assert verified_under_load, test_under_load
    assert [status for status, _ in answers] == [200] * len(answers)
    assert max(seconds for _, seconds in answers) < LINE_WAITS, answers
    # The adversity was real and lasted through every delivery timed above.
    assert slow.open_at_end == SLOW_CLIENTS
    assert len(page_seconds) == SLOW_PAGES and min(page_seconds) >= SANDBOX_DELAY, page_seconds
    assert busy_until < slow.started_at + TRICKLE_SECONDS
    assert _stored_events(env.app, channel_a["channelId"]) == len(answers)
    assert "Using worker: gthread" in env.log.read_text()  # gunicorn.conf.py was read


@pytest.mark.parametrize("trusted, seen", [(1, ("203.0.113.7", "https")), (0, ("127.0.0.1", "http"))])
def test_behind_one_proxy_the_app_sees_the_clients_address_and_https(tmp_path, trusted, seen):
    """TRUSTED_PROXIES=1 (gunicorn.conf.py's default): nginx's X-Forwarded-For/-Proto count; 0: ignored."""
    from flask import request
    app = create_app({"INSTANCE_PATH": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
                      "SANDBOX": False, "SECRET_KEY": "x", "ENCRYPTION_KEY": ENCRYPTION_KEY,
                      "TRUSTED_PROXIES": trusted})
    app.add_url_rule("/seen", "seen", lambda: {"seen": [request.remote_addr, request.scheme]})
    answer = app.test_client().get("/seen", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert tuple(answer.get_json()["seen"]) == seen


WORKER_TIMEOUT = 60


def _json_lines(text):
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # gunicorn's own start-up lines, tracebacks of other processes: not what is asserted
    return lines


def test_one_webhook_is_followed_by_its_nginx_request_id_and_no_token_is_logged(production, tmp_path):
    """A new friend's follow goes LINE → nginx → gunicorn → the stored delivery → a consumer (a real
    ``flask worker`` process) → the form sent: every line of it carries nginx's $request_id and the shop; the
    nginx access log masks the webhook, form and invitation tokens; /metrics counts the request by status with
    its latency, and shows the consumer's heartbeat."""
    from tests.webhooks import make_channel
    from wizard.models import WebhookDelivery
    env = production
    line_channel = env.sandbox.control.create_channel()
    channel = make_channel(env.app, "shop-a", channel_id=line_channel["channelId"],
                           secret=line_channel["channelSecret"], bot_user_id=line_channel["botUserId"])
    env.sandbox.control.update(line_channel["channelId"], endpoint=env.url + channel["path"])
    followed = env.sandbox.control.follow(line_channel["channelId"])
    assert followed["delivery"]["statusCode"] == 200, followed["delivery"]
    with env.app.app_context():
        [request_id] = db.session.scalars(db.select(WebhookDelivery.request_id)).all()
        db.session.remove()
    assert request_id and len(request_id) == 32, request_id  # nginx's $request_id: 32 hexadecimal digits

    # Other secrets in paths and referrers, through nginx too.
    web = requests.Session()
    web.verify, web.trust_env = env.certificate, False
    form_token, invite_token = "FormToken" + "x" * 30, "InviteToken" + "y" * 30
    web.get(f"{env.url}/form/{form_token}/thanks?lang=en", timeout=10,
            headers={"Referer": f"{env.url}/form/{form_token}?lang=en"})
    web.get(f"{env.url}/invite/{invite_token}", timeout=10)

    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wizard", "worker", "--threads", "2"],
                                  env={**os.environ, **env.env}, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while time.monotonic() < deadline and not env.sandbox.control.sent_messages(line_channel["channelId"]):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
        assert env.sandbox.control.sent_messages(line_channel["channelId"]), "the form was not sent in time"
        metrics = requests.get(f"http://127.0.0.1:{env.gunicorn_port}/metrics", timeout=10).text
    finally:
        worker.terminate()
        worker.wait(timeout=40)

    nginx = _json_lines(env.nginx_log.read_text())
    app_lines = _json_lines(env.log.read_text())
    worker_lines = _json_lines((tmp_path / "worker.log").read_text())
    [edge] = [line for line in nginx if line["request_id"] == request_id]
    assert (edge["method"], edge["path"], edge["status"]) == ("POST", "/line/webhook/****", 200)
    [access] = [line for line in app_lines if line.get("request_id") == request_id]
    assert (access["path"], access["status"], access["shop"]) == ("/line/webhook/****", 200, "shop-a")
    traced = [line for line in worker_lines if line.get("request_id") == request_id]
    assert {line.get("shop") for line in traced} == {"shop-a"}
    messages = " | ".join(line["message"] for line in traced)
    assert "(follow) done" in messages and "tasks.send_message" in messages, messages
    assert {"/form/****/thanks", "/invite/****"} <= {line["path"] for line in nginx}
    assert f"{env.url}/form/****" in {line["referrer"] for line in nginx}
    everything = env.nginx_log.read_text() + env.log.read_text() + (tmp_path / "worker.log").read_text()
    for token in (channel["token"], form_token, invite_token):
        assert token not in everything

    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(metrics) for s in family.samples}
    webhook = (("method", "POST"), ("route", "/line/webhook/<token>"), ("status", "200"))
    assert found[("wizard_http_requests_total", webhook)] == 1
    assert found[("wizard_http_request_duration_seconds_count", (("route", "/line/webhook/<token>"),))] == 1
    assert found[("wizard_consumers_alive", ())] == 1


def _noise_jpeg(megabytes):
    """A real JPEG of at least ``megabytes`` MB, as a phone's detailed photo is (noise compresses as badly)."""
    import io

    from PIL import Image
    side = int((megabytes * 1024 * 1024 / 0.9) ** 0.5)  # about 1.2 bytes a pixel
    data = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(data, "JPEG", quality=95)
    assert megabytes * 1024 * 1024 < len(data.getvalue()) < 10 * 1024 * 1024, len(data.getvalue())
    return data.getvalue()


def test_a_phone_photo_of_3_mb_goes_through_nginx_and_a_larger_body_gets_the_apps_page(production):
    """deploy/nginx.conf takes 11 MB on the template builder's pages only: a 3 MB photo is uploaded, resized and
    served back to LINE through nginx; 12 MB gets the app's 413 page in the owner's language (not nginx's
    English one) and stores nothing; every other route keeps the 1 MB limit (the webhook's)."""
    from wizard.models import MediaUpload
    env = production
    owner = Owner(env, "shop-a")
    owner.sign_in()
    builder = f"{env.url}/c/shop-a/templates/new"
    token = owner._token("/c/shop-a/templates/new?lang=en")
    form = {"csrf_token": token, "name": "照片", "messages-0-kind": "image", "action": "preview"}
    photo = _noise_jpeg(3)
    response = owner.web.post(builder, data=form, files={"messages-0-image": ("photo.jpg", photo, "image/jpeg")},
                              headers={"Referer": builder}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    address = re.search(r'name="messages-0-url" value="([^"]+)"', response.text).group(1)
    assert address.startswith(f"{env.url}/media/")
    served = requests.get(address, verify=env.certificate, timeout=10)  # as LINE fetches it: no session
    assert served.status_code == 200 and served.headers["Content-Type"] == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert len(served.content) < len(photo)  # resized for LINE (at most 2048 px a side)

    response = owner.web.post(builder, data=form, headers={"Referer": builder}, timeout=60,
                              files={"messages-0-image": ("huge.jpg", os.urandom(12 * 1024 * 1024), "image/jpeg")})
    assert response.status_code == 413
    assert "This picture is too large" in response.text and "at most 10 MB" in response.text, response.text[:500]
    assert f'href="{builder}"' in response.text  # back to the builder
    owner.web.get(f"{env.url}/?lang=zh_Hant_TW", timeout=10)
    response = owner.web.post(builder, data=form, headers={"Referer": builder}, timeout=60,
                              files={"messages-0-image": ("huge.jpg", os.urandom(12 * 1024 * 1024), "image/jpeg")})
    assert response.status_code == 413 and "這張圖片太大了" in response.text, response.text[:500]
    # nginx refused them (gunicorn never read 12 MB) and asked the app for its page.
    asked = [(line.get("method"), line.get("path"), line.get("status")) for line in _json_lines(env.log.read_text())]
    assert asked.count(("GET", "/too-large", 413)) == 2 and ("POST", "/c/shop-a/templates/new", 413) not in asked

    # Elsewhere nginx still refuses more than 1 MB before gunicorn sees it.
    response = requests.post(f"{env.url}/line/webhook/some-token", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                             verify=env.certificate, timeout=30, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    with env.app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(MediaUpload)) == 1
        db.session.remove()
