"""The failure paths an operator meets on a bad day, each taken for real: a database connection lost in the
middle of the worker's drain, one shop's check failing inside ``line check-all``, a staff chat URL nobody
answers, and pages asked for while the database is down.

Nothing here is mocked: PostgreSQL connections are ended by the server (``pg_terminate_backend``, from a
connection of our own, as an operator's psql would), a database that cannot be reached is a SQLite path that
cannot be opened or a PostgreSQL port nobody listens on, and LINE is the sandbox.
"""
import logging
import threading
import uuid
import time

import pytest
from sqlalchemy import create_engine, event, text

from tests.servers import Served, free_port
from tests.sink import Sink
from wizard import create_app
from wizard.extensions import db
from wizard.line import worker
from wizard.models import utcnow

pytest_plugins = ["tests.smtp_helpers", "tests.watch_helpers"]


def postgres_only(db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("ends a connection with pg_terminate_backend: PostgreSQL only")


def test_a_database_connection_lost_mid_event_backs_off_and_the_event_runs_later_exactly_once(
        app, line, db_url, caplog):
    postgres_only(db_url)
    user_id = line.follow(name="林小美")
    operator = create_engine(db_url)
    ended = []

    def end_the_connection(conn, cursor, statement, parameters, context, executemany):
        # The follow's first write: the server ends this very connection, mid-transaction, before it runs.
        if not ended and statement.lstrip().upper().startswith("INSERT INTO CONTACTS"):
            ended.append(conn.connection.dbapi_connection.info.backend_pid)
            with operator.connect() as psql:
                assert psql.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": ended[0]})

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", end_the_connection)
    caplog.set_level(logging.WARNING, logger="wizard.line.worker")
    try:
        worker.process_pending(app)
    finally:
        event.remove(engine, "before_cursor_execute", end_the_connection)
        operator.dispose()

    assert ended, "the follow never reached its contact insert"
    [waiting] = line.events()
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert waiting.error.startswith("OperationalError") and waiting.next_attempt_at > utcnow()
    assert "database failure, will retry" in caplog.text
    assert line.contact(user_id) is None and line.control.sent_messages(line.id, user_id) == []

    worker.process_pending(app)  # the database is back, but the backoff has not passed: nothing runs yet
    assert line.events()[0].status == "pending"

    line.make_due()
    assert worker.process_pending(app) == 1
    [done] = line.events()
    assert (done.status, done.attempts) == ("processed", 2)
    assert line.contact(user_id).form_sent_at is not None
    assert len(line.control.sent_messages(line.id, user_id)) == 1  # the form, once


def test_check_all_exits_2_naming_the_shop_whose_check_failed_and_still_lists_every_shop(
        watched, make_shop, db_url, caplog):
    """One shop's state cannot be saved (its row is locked and the waiting connection is ended): the other shops
    are checked and printed, the failed one keeps its recorded state, and the exit status is 2, not 0 or 1."""
    postgres_only(db_url)
    other, _ = make_shop("rainy-cafe", "雨天咖啡")
    watched.daily_due()
    engine = create_engine(db_url)
    locker = engine.connect()
    transaction = locker.begin()
    locker.execute(text("SELECT 1 FROM shop_health JOIN shops ON shops.id = shop_health.shop_id "
                        "WHERE shops.slug = :slug FOR UPDATE OF shop_health"), {"slug": watched.slug})
    locker_pid = locker.scalar(text("SELECT pg_backend_pid()"))
    ended = []

    def end_the_waiting_check():
        deadline = time.monotonic() + 60
        with engine.connect() as psql:
            while time.monotonic() < deadline and not ended:
                pid = psql.scalar(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
                    "'Lock' AND pid <> :locker"), {"locker": locker_pid})
                if pid:
                    ended.append(psql.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}))
                psql.commit()
                time.sleep(0.05)

    terminator = threading.Thread(target=end_the_waiting_check)
    terminator.start()
    caplog.set_level(logging.ERROR, logger="wizard.watch.drift")
    try:
        states, result = watched.check_all()
    finally:
        terminator.join()
        transaction.rollback()
        locker.close()
        engine.dispose()

    assert ended == [True], "no check waited on the locked shop"
    assert result.exit_code == 2, result.output
    assert set(states) == {watched.slug, other}
    assert states[watched.slug]["state"] == "healthy"  # as recorded before the failed check
    assert f"The check of 1 shop(s) failed (see the log): {watched.slug}" in result.stderr
    assert "check of shop" in caplog.text and "failed" in caplog.text

    # The database answers again: the next round checks every shop and exits as usual.
    states, result = watched.check_all()
    assert result.exit_code == 0, result.output
    assert states[watched.slug]["state"] == "healthy"


def test_an_unreachable_staff_chat_url_loses_only_its_post_the_mails_go_and_the_close_is_posted(
        watched, caplog):
    """The chat tool is down when the alert opens: the e-mails still go, the failure is one log line without the
    URL, the open post is not tried again (each way is posted once), and the close reaches the tool once it is
    back."""
    port = free_port()
    watched.app.config.update(ALERT_WEBHOOK_URL=f"http://127.0.0.1:{port}/chat-hook-secret-path",
                              ALERT_WEBHOOK_SECRET="chat-secret")
    caplog.set_level(logging.WARNING, logger="wizard.watch.alerts")
    watched.sandbox.control.update(watched.id, chat_mode="bot")
    states, result = watched.check_all()

    assert result.exit_code == 1 and states[watched.slug]["state"] == "broken"
    assert len(watched.mails_to(watched.owner)) == 1 and len(watched.mails_to(watched.staff)) == 1
    failures = [r.getMessage() for r in caplog.records if "alert post to the staff URL failed" in r.getMessage()]
    assert failures == ["alert post to the staff URL failed: URLError"]
    assert "chat-hook-secret-path" not in caplog.text
    [alert] = watched.alerts()
    assert alert.closed_at is None and alert.last_posted_at is not None

    chat = Sink()
    back = Served(chat, port=port)
    try:
        watched.check_all()
        assert chat.requests == []  # the open post is not sent again
        watched.sandbox.control.update(watched.id, chat_mode="chat")
        for _ in range(3):
            states, _ = watched.check_all()
            if states[watched.slug]["state"] == "healthy":
                break
        assert states[watched.slug]["state"] == "healthy"
        assert [body["status"] for body in chat.bodies] == ["closed"]
    finally:
        back.stop()
        chat.served.stop()


def _unreachable(db_url, tmp_path):
    if db_url.startswith("sqlite"):
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the database's folder should be")
        return f"sqlite:///{blocker / 'wizard.db'}"
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/wizard"


def _database_down(app, db_url, tmp_path):
    """The same deployment (keys, settings) with its database unreachable."""
    keys = ("TESTING", "SECRET_KEY", "ENCRYPTION_KEY", "WTF_CSRF_ENABLED", "LINE_API_HOST", "SANDBOX",
            "PUBLIC_BASE_URL", "QUEUE_NAME")
    return create_app({"INSTANCE_PATH": app.instance_path, **{k: app.config[k] for k in keys},
                       "DATABASE_URL": _unreachable(db_url, tmp_path),
                       "QUEUE_URL": f"sqlite:///{tmp_path / 'huey.db'}",
                       "PROPAGATE_EXCEPTIONS": False})  # as in production: the error handlers answer


@pytest.mark.parametrize("lang, words", [(None, "我們這邊出了問題"), ("en", "Something went wrong on our side")])
def test_with_the_database_down_a_signed_in_owner_gets_our_words_not_a_traceback(
        app, client, make_shop, login, db_url, tmp_path, lang, words):
    slug, owner = make_shop()
    login(owner)
    if lang:
        client.get(f"/shops/?lang={lang}")  # the choice sticks for the visit (session)
    down = _database_down(app, db_url, tmp_path).test_client()
    down.set_cookie("session", client.get_cookie("session").value)

    page = down.get(f"/setup/{slug}/")
    body = page.get_data(as_text=True)
    assert page.status_code == 500
    assert words in body
    for inside in ("Traceback", "OperationalError", "sqlite", "psycopg", "File \""):
        assert inside not in body


def test_with_the_database_down_a_customer_form_link_gets_the_error_page_in_their_language(app, db_url, tmp_path):
    down = _database_down(app, db_url, tmp_path).test_client()

    page = down.get("/form/some-customers-personal-link")
    body = page.get_data(as_text=True)
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "我們這邊出了問題" in body and "<html" in body
    assert "Traceback" not in body and "OperationalError" not in body
    english = down.get("/form/some-customers-personal-link", headers={"Accept-Language": "en"})
    assert english.status_code == 500
    english = down.get("/form/some-customers-personal-link?lang=en")
    assert "Something went wrong on our side" in english.get_data(as_text=True)



def test_line_connect_with_mistyped_credentials_names_each_mistake_and_saves_nothing(app, runner, make_shop):
    """An operator pasting the wrong values gets every field's problem with its code in one go, exit status 1,
    no LINE call and no channel; the typed secret is not printed back."""
    from wizard.models import Channel
    slug, _ = make_shop()
    typed_secret = "s3cr3t-but-only-21-ch"
    result = runner.invoke(args=["line", "connect", slug, "--channel-id", "12345abc",
                                 "--channel-secret", typed_secret])
    assert result.exit_code == 1
    assert "(channel_id_format)" in result.output and "(channel_secret_format)" in result.output
    assert typed_secret not in result.output
    swapped = runner.invoke(args=["line", "connect", slug, "--channel-id", "0123456789abcdef0123456789abcdef",
                                  "--channel-secret", "1234567890"])
    assert swapped.exit_code == 1 and "(channel_id_swapped)" in swapped.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Channel.id))) == 0


def test_sending_the_form_again_to_a_customer_who_blocked_the_account_says_why_and_sends_nothing(
        app, client, line, login):
    from wizard.models import Outbox
    login(f"owner-{line.slug}@example.com")
    client.get("/?lang=en")
    user_id = line.follow(name="林小美")
    worker.process_pending(app)
    contact_id = line.contact(user_id).id
    line.control.unfollow(line.id, user_id)
    worker.process_pending(app)
    with app.app_context():
        forms_before = db.session.scalar(db.select(db.func.count(Outbox.id)))

    response = client.post(f"/c/contacts/{contact_id}/send-form", data={"resend_key": str(uuid.uuid4())},
                           follow_redirects=True)
    assert response.status_code == 200
    assert "Not sent: this customer has blocked the account" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Outbox.id))) == forms_before
    assert len(line.control.sent_messages(line.id, user_id)) == 1  # the form sent at the follow, nothing more


def test_line_failing_while_the_owner_sets_or_tests_the_webhook_url_is_explained_with_a_reference(
        client, owner, sandbox):
    """LINE answers 500 to the owner's "set it for me" and "test": the page says LINE answered with an error
    and gives the reference staff can find in the log; nothing is changed at LINE."""
    from tests.wizard_helpers import connect
    control = sandbox.control
    channel = control.create_channel()
    connect(client, owner, channel)
    control.fail(channel["channelId"], 500)
    try:
        for action in ("set_endpoint", "test"):
            page = client.post(f"/setup/{owner}/webhook_url", data={"action": action}, follow_redirects=True)
            words = page.get_data(as_text=True)
            assert page.status_code == 200
            assert "LINE answered with an error." in words and "Reference: line_error-500-" in words, action
        assert not control.channel(channel["channelId"])["endpoint"]
    finally:
        control.heal(channel["channelId"])
