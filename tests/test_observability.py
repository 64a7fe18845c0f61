"""What an operator relies on: JSON log lines tied to a request id, /healthz and /readyz, and /metrics that
counts webhooks, refusals, LINE calls and the event backlog, the same whichever gunicorn worker answers."""
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port
from tests.webhooks import ROOT, encode, make_channel, sign, signed_headers, text_event
from tests.wizard_helpers import connect
from wizard import create_app, observability
from wizard.extensions import db
from wizard.models import WebhookEvent, utcnow

SIBLING_KEYS = ("INSTANCE_PATH", "DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY", "LINE_API_HOST", "SANDBOX",
                "PUBLIC_BASE_URL", "TESTING", "WTF_CSRF_ENABLED", "LINE_TIMEOUT")


def sibling(app, **overrides):
    """Another app on the same database and instance folder, configured differently."""
    return create_app({"INSTANCE_PATH": app.instance_path, **{k: app.config[k] for k in SIBLING_KEYS},
                       **overrides})


@pytest.fixture
def fresh_logging():
    """Within ``with fresh_logging():`` the process's logging is as nobody had configured it (as in a
    ``flask worker`` process); afterwards the test runner's handlers are back and the app's are gone."""
    @contextlib.contextmanager
    def fresh():
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        for handler in handlers:
            root.removeHandler(handler)
        try:
            yield
        finally:
            for handler in root.handlers[:]:
                root.removeHandler(handler)
            for handler in handlers:
                root.addHandler(handler)
            root.setLevel(level)
    return fresh


def log_lines(text):
    """Every line must be a JSON object: that is the whole point of the format."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def scrape(client, **kwargs):
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.status_code
    return samples(response.get_data(as_text=True))


def samples(exposition):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def post_delivery(client, channel, events, secret=None, **headers):
    body = encode({"destination": channel["bot_user_id"], "events": events})
    return client.post(channel["path"], data=body,
                       headers={**signed_headers(secret or channel["secret"], body), **headers})


# ---- logs and request ids ------------------------------------------------------------------------------------

def test_json_log_lines_carry_the_request_id_the_response_shows(app, make_shop, capsys, fresh_logging):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    with fresh_logging():
        client = sibling(app, LOG_FORMAT="json").test_client()
        capsys.readouterr()
        given = client.post(channel["path"], data=b'{"events": []}', headers={
            "x-line-signature": sign("not the secret", b'{"events": []}'), "X-Request-Id": "edge-7f3a9c"})
        made = client.post(channel["path"], data=b"{}")  # no signature, no id of its own
        odd = client.post(channel["path"], data=b"{}", headers={"X-Request-Id": "has spaces\tand tabs"})
        lines = log_lines(capsys.readouterr().err)

    assert given.status_code == 400
    assert given.headers["X-Request-Id"] == "edge-7f3a9c"  # a proxy's id carries through
    made_id = made.headers["X-Request-Id"]
    assert len(made_id) == 32 and made_id != "edge-7f3a9c"
    assert odd.headers["X-Request-Id"] not in ("has spaces\tand tabs", made_id)
    refused = [line for line in lines if line["logger"] == "wizard.line.receiver"]
    assert [(line["request_id"], line["level"]) for line in refused] == [
        ("edge-7f3a9c", "INFO"), (made_id, "INFO"), (odd.headers["X-Request-Id"], "INFO")]
    assert "bad_signature" in refused[0]["message"] and "missing_signature" in refused[1]["message"]
    assert refused[0]["time"].endswith("Z")
    assert not any(channel["token"] in json.dumps(line) for line in lines)


def test_a_crash_is_one_json_line_with_its_traceback_and_no_secret_path(app, make_shop, capsys, fresh_logging):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    with fresh_logging(), app.app_context():
        # As in production: Flask logs the exception and answers 500 (tests otherwise re-raise it).
        client = sibling(app, LOG_FORMAT="json", PROPAGATE_EXCEPTIONS=False).test_client()
        capsys.readouterr()
        # The events table goes missing under the receiver's feet.
        db.session.execute(db.text("ALTER TABLE webhook_events RENAME TO webhook_events_away"))
        db.session.commit()
        try:
            response = post_delivery(client, channel, [text_event("U" + secrets.token_hex(16), "hi")])
        finally:
            db.session.execute(db.text("ALTER TABLE webhook_events_away RENAME TO webhook_events"))
            db.session.commit()
        lines = log_lines(capsys.readouterr().err)
    assert response.status_code == 500
    crash = [line for line in lines if "exception" in line and line.get("request_id")]
    assert crash, lines
    assert crash[0]["request_id"] == response.headers["X-Request-Id"]
    assert crash[0]["level"] == "ERROR" and "Traceback" in crash[0]["exception"]
    assert "webhook_events" in crash[0]["exception"]
    assert "/line/webhook/" in crash[0]["message"]  # Flask names the path …
    assert not any(channel["token"] in json.dumps(line) for line in lines)  # … without its secret


def test_the_text_logs_exception_lines_never_show_the_webhook_token(app, make_shop, capsys, fresh_logging):
    """The embedded default writes text logs through Flask's own handler: a crash in the receiver is logged as
    "Exception on <path>" with its traceback, and the path is the webhook URL."""
    from flask.logging import default_handler
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    with fresh_logging(), app.app_context():
        client = sibling(app, LOG_FORMAT="text", PROPAGATE_EXCEPTIONS=False).test_client()
        try:
            capsys.readouterr()
            db.session.execute(db.text("ALTER TABLE webhook_events RENAME TO webhook_events_away"))
            db.session.commit()
            try:
                response = post_delivery(client, channel, [text_event("U" + secrets.token_hex(16), "hi")])
            finally:
                db.session.execute(db.text("ALTER TABLE webhook_events_away RENAME TO webhook_events"))
                db.session.commit()
            err = capsys.readouterr().err
        finally:
            logging.getLogger("wizard").removeHandler(default_handler)
    assert response.status_code == 500
    assert "Exception on /line/webhook/**** [POST]" in err and "Traceback" in err, err
    assert channel["token"] not in err


def test_metrics_count_requests_by_route_and_status_with_their_latency(app, client, make_shop):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    before = scrape(client)
    assert post_delivery(client, channel, [text_event("U" + secrets.token_hex(16), "hello")]).status_code == 200
    assert post_delivery(client, channel, [], secret="f" * 32).status_code == 400
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    webhook = "/line/webhook/<token>"  # the route, never the token
    assert grew("wizard_http_requests_total", route=webhook, method="POST", status="200") == 1
    assert grew("wizard_http_requests_total", route=webhook, method="POST", status="400") == 1
    assert grew("wizard_http_requests_total", route="(no route)", method="GET", status="404") == 1
    assert grew("wizard_http_request_duration_seconds_count", route=webhook) == 2
    assert grew("wizard_http_request_duration_seconds_bucket", route=webhook, le="+Inf") == 2
    assert not any(channel["token"] in str(key) for key in after)


def test_metrics_show_each_consumers_heartbeat_and_one_that_stopped_beating(app, client):
    from wizard import heartbeat, queue
    queue.start_in_process(app, threads=2)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and value(scrape(client), "wizard_consumers_alive") != 1:
            time.sleep(0.1)
        found = scrape(client)
        assert value(found, "wizard_consumers_alive") == 1, "the consumer's heartbeat never showed"
        name = heartbeat.consumer_name()
        assert value(found, "wizard_consumer_threads_alive", consumer=name) == 2
        assert value(found, "wizard_consumer_heartbeat_age_seconds", consumer=name) < heartbeat.EVERY
    finally:
        queue.stop_in_process(app)
    assert value(scrape(client), "wizard_consumers_alive") == 0  # stopped on purpose: its row is gone

    with app.app_context():  # a consumer on another machine hung two minutes ago
        heartbeat.beat("worker-2:4242", 4, 4)
        db.session.execute(db.update(heartbeat.ConsumerHeartbeat)
                           .values(beat_at=utcnow() - timedelta(minutes=2)))
        db.session.commit()
    found = scrape(client)
    assert value(found, "wizard_consumers_alive") == 0
    assert value(found, "wizard_consumer_heartbeat_age_seconds", consumer="worker-2:4242") >= 120


def test_text_logs_are_left_alone_in_tests_and_the_embedded_default(app):
    assert observability.log_format(app.config) == "text"
    assert observability.log_format({"SANDBOX": False}) == "json"  # production's default
    assert observability.log_format({"SANDBOX": True, "LOG_FORMAT": "JSON"}) == "json"


def test_logging_someone_else_configured_is_left_as_it_is(app):
    """A production-like app made inside a configured process (gunicorn's logconfig, a test runner) adds no
    second handler: every line would otherwise be written twice, once not as JSON."""
    root = logging.getLogger()
    before = root.handlers[:], root.level
    sibling(app, TESTING=False, LOG_FORMAT=None)
    assert (root.handlers, root.level) == before


# ---- health and readiness ------------------------------------------------------------------------------------

def test_readyz_is_ready_when_database_and_queue_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"database": "ok", "queue": "ok", "keys": "ok"}
    assert client.get("/healthz").data == b"ok"


@pytest.mark.parametrize("where", ["sqlite-in-a-missing-folder", "postgresql-on-a-closed-port"])
def test_readyz_is_503_naming_the_database_when_it_cannot_be_reached(app, tmp_path, where):
    if where.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'no-such-folder' / 'wizard.db'}"
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/wizard"
    # The queue stays where it answers, so only the database is to blame.
    unready = sibling(app, DATABASE_URL=url, QUEUE_URL=app.config["QUEUE_URL"], READYZ_TIMEOUT=2.0)
    client = unready.test_client()
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json == {"database": "unreachable", "queue": "ok", "keys": "unknown"}
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "127.0.0.1" not in text and "no-such-folder" not in text
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_names_the_queue_when_its_store_cannot_be_reached(app):
    unready = sibling(app, QUEUE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/queue", READYZ_TIMEOUT=3.0)
    response = unready.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"database": "ok", "queue": "unreachable", "keys": "ok"}


# ---- metrics -------------------------------------------------------------------------------------------------

def test_metrics_count_deliveries_stored_and_refused_by_reason(app, client, make_shop):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    before = scrape(client)

    assert post_delivery(client, channel, [text_event("U" + secrets.token_hex(16), "hello")]).status_code == 200
    assert post_delivery(client, channel, [], secret="f" * 32).status_code == 400
    assert post_delivery(client, channel, [], secret="f" * 32).status_code == 400
    assert client.post(channel["path"], data=b"{}").status_code == 400

    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    assert grew("wizard_webhooks_received_total") == 1
    assert grew("wizard_webhooks_rejected_total", reason="bad_signature") == 2
    assert grew("wizard_webhooks_rejected_total", reason="missing_signature") == 1
    assert grew("wizard_webhooks_rejected_total", reason="invalid_json") == 0


def test_metrics_show_the_event_backlog_and_its_age_from_the_database(app, client, make_shop):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    found = scrape(client)
    assert value(found, "wizard_database_up") == 1
    assert value(found, "wizard_events_pending") == 0 and value(found, "wizard_event_processing_lag_seconds") == 0

    user = "U" + secrets.token_hex(16)
    post_delivery(client, channel, [text_event(user, "one"), text_event(user, "two")])
    with app.app_context():
        db.session.execute(db.update(WebhookEvent).values(received_at=utcnow() - timedelta(seconds=300)))
        db.session.commit()
    found = scrape(client)
    assert value(found, "wizard_events_pending") == 2
    assert 300 <= value(found, "wizard_event_processing_lag_seconds") < 330

    with app.app_context():
        db.session.execute(db.update(WebhookEvent).values(status="processed", processed_at=utcnow()))
        db.session.commit()
    found = scrape(client)
    assert value(found, "wizard_events_pending") == 0 and value(found, "wizard_event_processing_lag_seconds") == 0


def test_dead_outbox_messages_are_shown_and_their_absence_breaks_nothing(app, client):
    with app.app_context():
        has_outbox = db.inspect(db.engine).has_table("outbox")
    if has_outbox:
        assert ("wizard_outbox_dead", ()) in scrape(client)
        with app.app_context():
            db.session.execute(db.text("DROP TABLE outbox"))
            db.session.commit()
    found = scrape(client)
    assert ("wizard_outbox_dead", ()) not in found
    assert value(found, "wizard_database_up") == 1 and ("wizard_events_pending", ()) in found


def test_metrics_say_when_the_database_cannot_be_read(app, tmp_path):
    broken = sibling(app, DATABASE_URL=f"sqlite:///{tmp_path / 'no-such-folder' / 'wizard.db'}")
    found = scrape(broken.test_client())
    assert value(found, "wizard_database_up") == 0
    assert ("wizard_events_pending", ()) not in found


def test_metrics_count_line_calls_by_endpoint_and_outcome(app, client, owner, sandbox):
    channel = sandbox.control.create_channel()
    before = scrape(client)
    assert connect(client, owner, dict(channel, channelSecret="f" * 32)).status_code == 422
    connect(client, owner, channel)
    after = scrape(client)

    def grew(endpoint, outcome):
        return (value(after, "wizard_line_calls_total", endpoint=endpoint, outcome=outcome)
                - value(before, "wizard_line_calls_total", endpoint=endpoint, outcome=outcome))
    assert grew("issue_token", "wrong_secret") == 1
    assert grew("issue_token", "ok") >= 1
    assert grew("bot_info", "ok") >= 1


def test_metrics_are_for_loopback_or_the_bearer_of_the_token(app, client):
    assert client.get("/metrics").status_code == 200  # from 127.0.0.1, directly
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 403
    # Through a proxy on the same host the address is loopback, the client is not.
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403

    guarded = sibling(app, METRICS_TOKEN="s3cret-scrape-token").test_client()
    refused = guarded.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = guarded.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"},
                          environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert allowed.status_code == 200 and "wizard_webhooks_received_total" in allowed.get_data(as_text=True)


# ---- under gunicorn ------------------------------------------------------------------------------------------

def _http(port, method, path, body=None, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _leave_stale_counts(directory):
    """A previous run's counts in the multiprocess directory, as a crashed or restarted server leaves them."""
    code = "from wizard.metrics import WEBHOOKS_RECEIVED; WEBHOOKS_RECEIVED.inc(5)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={**os.environ, observability.MULTIPROC_ENV: str(directory)})
    assert list(directory.glob("counter_*.db"))


def _gunicorn_config(tmp_path):
    """The repository's gunicorn.conf.py, or (until it exists) the minimum it must contain."""
    if (ROOT / "gunicorn.conf.py").exists():
        return ROOT / "gunicorn.conf.py"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "from wizard import observability\n"
        "observability.prepare_multiprocess_env()\n"
        "logconfig_dict = observability.gunicorn_logconfig()\n"
        "def on_starting(server): observability.on_starting(server)\n"
        "def child_exit(server, worker): observability.child_exit(server, worker)\n")
    return config


def test_master_start_empties_the_multiprocess_dir_of_counts_only(tmp_path, monkeypatch):
    directory = tmp_path / "prometheus"
    monkeypatch.setenv(observability.MULTIPROC_ENV, str(directory))
    assert observability.prepare_multiprocess_env() == str(directory) and directory.is_dir()
    for name in ("counter_4121.db", "gauge_livesum_4122.db", "histogram_4121.db", "wizard.db", "notes.txt"):
        (directory / name).write_bytes(b"x")
    observability.on_starting(None)
    assert sorted(path.name for path in directory.iterdir()) == ["notes.txt", "wizard.db"]


def test_without_a_dir_given_gunicorn_gets_a_private_one_for_its_workers(monkeypatch):
    monkeypatch.delenv(observability.MULTIPROC_ENV, raising=False)
    directory = Path(observability.prepare_multiprocess_env())
    try:
        assert os.environ[observability.MULTIPROC_ENV] == str(directory)  # what the workers will inherit
        assert directory.is_dir() and directory.stat().st_mode & 0o077 == 0
        assert observability.prepare_multiprocess_env() == str(directory)  # a reload keeps it
    finally:
        os.environ.pop(observability.MULTIPROC_ENV, None)  # monkeypatch undoes only what it set
        shutil.rmtree(directory)


@pytest.fixture
def gunicorn(app, tmp_path):
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    _leave_stale_counts(prometheus_dir)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != observability.MULTIPROC_ENV},
           "WIZARD_INSTANCE_PATH": app.instance_path, "WIZARD_DATABASE_URL": app.config["DATABASE_URL"],
           "WIZARD_SECRET_KEY": app.config["SECRET_KEY"], "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": "http://127.0.0.1:9",
           "WIZARD_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "WIZARD_TRUSTED_PROXIES": "0",
           observability.MULTIPROC_ENV: str(prometheus_dir)}
    binary = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    stdout, stderr = (tmp_path / "gunicorn.out").open("w"), (tmp_path / "gunicorn.err").open("w")
    process = subprocess.Popen([binary, "-c", str(_gunicorn_config(tmp_path)), "-w", "2", "--threads", "4",
                                "-b", f"127.0.0.1:{port}", "wsgi:app"],
                               cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 60  # two workers importing the app on busy cores take a while
    while True:
        try:
            if _http(port, "GET", "/healthz")[0] == 200:
                break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.err").read_text()
            time.sleep(0.2)
    server = type("Gunicorn", (), {"port": port, "process": process, "dir": prometheus_dir,
                                   "out": tmp_path / "gunicorn.out", "err": tmp_path / "gunicorn.err"})
    yield server
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    stdout.close()
    stderr.close()


def _access_lines(server):
    return log_lines(server.out.read_text())


def test_metrics_add_up_every_gunicorn_worker(app, make_shop, gunicorn):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    sent, answered_by = 0, {}
    # Deliver until both workers have received some (the kernel picks which), at least 12.
    while sent < 12 or len(set(answered_by.values())) < 2:
        assert sent < 300, "one worker answered every delivery"
        body = encode({"destination": channel["bot_user_id"],
                       "events": [text_event("U" + secrets.token_hex(16), f"hello {sent}")]})
        request_id = f"delivery-{sent}"
        status, headers, _ = _http(gunicorn.port, "POST", channel["path"], body,
                                   {**signed_headers(channel["secret"], body), "X-Request-Id": request_id})
        assert status == 200 and headers["X-Request-Id"] == request_id, gunicorn.err.read_text()[-3000:]
        sent += 1
        time.sleep(0.01)
        answered_by = {line["request_id"]: line["pid"] for line in _access_lines(gunicorn)
                       if line.get("request_id", "").startswith("delivery-")}
        if sent % 10 == 0:  # the access line is written after the answer: let it land
            time.sleep(0.2)
    status, _, _ = _http(gunicorn.port, "POST", channel["path"], b"{}",
                         {"Content-Type": "application/json", "X-Request-Id": "refused-1"})
    assert status == 400

    scraped_by = set()
    for attempt in range(40):
        status, headers, body = _http(gunicorn.port, "GET", "/metrics", headers={"X-Request-Id": f"scrape-{attempt}"})
        assert status == 200
        found = samples(body.decode())
        # Exactly what was sent: every worker's counts, none from the run before (on_starting emptied the dir).
        assert value(found, "wizard_webhooks_received_total") == sent
        assert value(found, "wizard_webhooks_rejected_total", reason="missing_signature") == 1
        assert value(found, "wizard_events_pending") == sent
        time.sleep(0.02)
        scraped_by = {line["pid"] for line in _access_lines(gunicorn)
                      if line.get("request_id", "").startswith("scrape-")}
        if attempt >= 10 and len(scraped_by) == 2:
            break
    assert len(scraped_by) == 2, "every scrape went to one worker"

    # The access log: JSON lines, the request id the client saw, the path's secret masked.
    access = _access_lines(gunicorn)
    delivery = next(line for line in access if line.get("request_id") == "delivery-0")
    assert delivery["method"] == "POST" and delivery["status"] == 200
    assert delivery["path"].startswith("/line/webhook/") and channel["token"] not in delivery["path"]
    # The app's own lines (and gunicorn's) on stderr: JSON too, tied to the request that caused them.
    errors = log_lines(gunicorn.err.read_text())
    refused = [line for line in errors if line["logger"] == "wizard.line.receiver"]
    assert [line["request_id"] for line in refused] == ["refused-1"]
    assert any(line["logger"] == "gunicorn.error" for line in errors)
    assert channel["token"] not in gunicorn.out.read_text() + gunicorn.err.read_text()
