"""No session of ours stays idle in a transaction (issue 14, item 8).

A consumer that keeps a transaction open for its whole life stops VACUUM from removing anything and makes
every ALTER TABLE of a deploy wait on it, while every webhook insert queues behind that ALTER. The test runs
what production runs: two ``flask --app wizard worker`` processes on PostgreSQL, each with its own
``application_name``, lets them start (the start-up sweep), run a delivered event and then idle, and reads
``pg_stat_activity`` the whole time they idle: no session of theirs stays idle inside a transaction for a
second (a task's own transaction lasts a moment between its query and its end; the bug's lasted for ever).
"""
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.processes import Consumer, consumer_env
from tests.webhooks import encode, make_channel, signed_headers, text_event
from wizard.extensions import db
from wizard.models import WebhookEvent

IDLE_SECONDS = 4


STAYS = 1.0  # seconds idle inside a transaction that count as "stays" (a task ends its own within a moment)


def _sessions(engine, names):
    """The consumers' sessions: (application, state, seconds in that state, the last query's start)."""
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT application_name, state, extract(epoch FROM clock_timestamp() - state_change), "
            "left(query, 120) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = ANY(:names)"), {"names": names}).all()


def _processed(app):
    with app.app_context():
        statuses = db.session.scalars(db.select(WebhookEvent.status)).all()
        db.session.remove()
    return statuses


def test_idle_consumers_hold_no_transaction_open(app, db_url, make_shop, sandbox, tmp_path):
    if not db_url.startswith("postgresql"):
        pytest.skip("pg_stat_activity is PostgreSQL's")
    slug, _ = make_shop()
    created = sandbox.control.create_channel(display_name="晴天烘焙坊")
    channel = make_channel(app, slug, channel_id=created["channelId"], secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    names = [f"consumer-{n}-{app.config['QUEUE_NAME']}" for n in (1, 2)]
    consumers = []
    engine = create_engine(db_url)
    try:
        for n, name in enumerate(names, 1):
            url = make_url(db_url).update_query_dict({"application_name": name})
            env = consumer_env(app, DATABASE_URL=url.render_as_string(hide_password=False),
                               QUEUE_URL=url.render_as_string(hide_password=False), WORKER_POLL_SECONDS="0.2")
            consumers.append(Consumer(env, tmp_path / f"consumer-{n}.log"))
        for consumer in consumers:
            consumer.wait_running()
        # Some work for them: a customer's message, delivered signed; a consumer runs it and goes idle.
        body = encode({"destination": channel["bot_user_id"], "events": [text_event("U" + "a" * 32, "你好")]})
        response = app.test_client().post(channel["path"], data=body,
                                          headers=signed_headers(channel["secret"], body))
        assert response.status_code == 200, response.get_data(as_text=True)
        deadline = time.monotonic() + 60
        while _processed(app) != ["processed"]:
            assert time.monotonic() < deadline, f"the event was not run: {_processed(app)}"
            time.sleep(0.2)

        seen, open_transactions = set(), []
        idle_until = time.monotonic() + IDLE_SECONDS
        while time.monotonic() < idle_until:
            rows = _sessions(engine, names)
            seen |= {row[0] for row in rows}
            open_transactions += [row for row in rows if row[1] and row[1].startswith("idle in transaction")
                                  and row[2] >= STAYS]
            time.sleep(0.25)
        assert seen == set(names), f"the consumers' sessions were not found: {seen}"
        assert not open_transactions, f"consumers left transactions open while idle: {open_transactions[:5]}"
    finally:
        for consumer in consumers:
            consumer.stop()
        engine.dispose()
