"""The fault test: thousands of signed events while queue consumers are killed with -9 and the database
connections are cut; afterwards every event ran once, nobody got two forms, and every form LINE holds has
its outbox row.

The sandbox plays LINE (its users follow, block and follow again; it issues real reply tokens and answers
the consumers' profile, reply and push calls over HTTP). The events reach our receiver signed with the
channel's secret, in deliveries of one to eight events, with duplicates and LINE-style redeliveries. Two
consumer processes (``flask --app wizard worker``, exactly as production starts them) run the queue; a
killer thread sends one of them SIGKILL every second or so and starts a new one.
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from tests.webhooks import ROOT, encode, make_channel, signed_headers, text_event
from wizard.extensions import db
from wizard.models import Contact, Message, Outbox, WebhookEvent

USERS = 400
REFOLLOWERS = 150  # of them block and follow again
TOTAL_EVENTS = 5000
CONSUMERS = 2
KILLS = 8
# How long the consumers may take to finish every event after the last delivery: about a minute on a calm
# machine; the bound holds with a parallel suite on the same two cores (364 of 400 forms after 240 s once).
SETTLE_SECONDS = 600


@pytest.fixture
def line_channel(app, sandbox, make_shop):
    """The sandbox's Sandbox object and a shop's channel on it that nobody delivers to but this test."""
    slug, _ = make_shop()
    created = sandbox.control.create_channel(display_name="颱風天茶飲")  # no webhook URL: we deliver ourselves
    # No monthly limit: on a busy machine reply tokens expire before the consumers reach them and the forms go
    # out as pushes, which the free plan's 200 a month would refuse (this test is about exactly-once, not quota).
    sandbox.control.update(created["channelId"], quota=None)
    channel = make_channel(app, slug, channel_id=created["channelId"], secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    return sandbox.control, channel


def _events(control, channel_id):
    """LINE's events for USERS friends (REFOLLOWERS of them block and come back) and their messages, in the
    order they happened; follows and unfollows come from the sandbox, with its real reply tokens."""
    users, happened = [], []
    for n in range(USERS):
        result = control.follow(channel_id, name=f"客人{n}")
        users.append(result["user"]["userId"])
        happened.append(result["event"])
    for user_id in users[:REFOLLOWERS]:
        happened.append(control.unfollow(channel_id, user_id)["event"])
        happened.append(control.follow(channel_id, user_id)["event"])
    rng = random.Random(7)
    base = max(e["timestamp"] for e in happened)
    for n in range(TOTAL_EVENTS - len(happened)):
        happened.append(text_event(rng.choice(users), f"訊息 {n}", timestamp=base + n))
    happened.sort(key=lambda e: e["timestamp"])
    return users, happened


def _deliveries(events, rng):
    """Bodies as LINE would send them: a few events each, plus duplicates and redeliveries later on."""
    bodies, index = [], 0
    while index < len(events):
        size = rng.randint(1, 8)
        bodies.append(events[index:index + size])
        index += size
    for batch in rng.sample(bodies, len(bodies) // 10):
        again = [dict(e, deliveryContext={"isRedelivery": True}) for e in batch]
        bodies.insert(min(len(bodies), bodies.index(batch) + rng.randint(1, 40)), again)
    for batch in rng.sample(bodies, len(bodies) // 20):
        bodies.append(batch)  # a plain duplicate (the network retried)
    return bodies


class Consumers:
    """``flask --app wizard worker`` processes, started, killed with SIGKILL and replaced."""

    def __init__(self, env, log_dir):
        self.env, self.log_dir, self.procs, self.started, self.kills = env, log_dir, [], 0, 0

    def start(self):
        self.started += 1
        log = open(self.log_dir / f"consumer-{self.started}.log", "w")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wizard", "worker", "--threads", "2"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def kill_one(self, rng):
        victim = rng.choice(self.procs)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.procs.remove(victim)
        self.kills += 1
        self.start()

    def errors(self):
        """The consumers' error lines, for the report when something was left behind."""
        lines = []
        for path in sorted(self.log_dir.glob("consumer-*.log")):
            lines += [f"{path.name}: {line}" for line in path.read_text().splitlines()
                      if "ERROR" in line or "Error" in line]
        return "\n".join(lines[-30:])

    def stop(self):
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def _cut_database_connections(db_url):
    """Every connection to the test database but this one is terminated by the server, as a failover would."""
    engine = create_engine(db_url)
    with engine.connect() as connection:
        cut = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    engine.dispose()
    return cut


def _settled(app):
    with app.app_context():
        events = dict(db.session.execute(db.select(WebhookEvent.status, db.func.count())
                                         .group_by(WebhookEvent.status)).all())
        outbox = dict(db.session.execute(db.select(Outbox.status, db.func.count())
                                         .group_by(Outbox.status)).all())
        db.session.remove()
    return events, outbox


def test_thousands_of_events_survive_killed_consumers_and_cut_connections(app, line_channel, db_url, tmp_path):
    control, channel = line_channel
    rng = random.Random(11)
    users, happened = _events(control, channel["channel_id"])
    assert len(happened) == TOTAL_EVENTS
    env = {**os.environ, "WIZARD_DATABASE_URL": db_url, "WIZARD_INSTANCE_PATH": app.instance_path,
           "WIZARD_SECRET_KEY": app.config["SECRET_KEY"], "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": app.config["LINE_API_HOST"],
           "WIZARD_PUBLIC_BASE_URL": app.config["PUBLIC_BASE_URL"], "WIZARD_QUEUE_NAME": app.config["QUEUE_NAME"],
           "WIZARD_WORKER_LEASE_SECONDS": "2", "WIZARD_LINE_TIMEOUT": "2", "WIZARD_WORKER_POLL_SECONDS": "0.2"}
    consumers = Consumers(env, tmp_path)
    for _ in range(CONSUMERS):
        consumers.start()

    def killer():
        while consumers.kills < KILLS:
            time.sleep(rng.uniform(0.6, 1.6))
            consumers.kill_one(rng)

    killing = threading.Thread(target=killer)
    killing.start()
    client = app.test_client()
    refused = 0
    try:
        bodies = _deliveries(happened, rng)
        for number, events in enumerate(bodies):
            body = encode({"destination": channel["bot_user_id"], "events": events})
            if db_url.startswith("postgresql") and number == len(bodies) // 2:
                assert _cut_database_connections(db_url) >= CONSUMERS
            for _attempt in range(5):  # LINE delivers again when we fail to answer 200
                response = client.post(channel["path"], data=body,
                                       headers=signed_headers(channel["secret"], body))
                if response.status_code == 200:
                    break
                refused += 1
                time.sleep(0.2)
            assert response.status_code == 200, response.get_data(as_text=True)
        killing.join()
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            events, outbox = _settled(app)
            if set(events) <= {"processed"} and set(outbox) <= {"sent", "unknown"} \
                    and sum(events.values()) == TOTAL_EVENTS and sum(outbox.values()) == USERS:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the consumers had not finished {SETTLE_SECONDS} s after the last delivery: events "
                            f"{events} (of {TOTAL_EVENTS}), forms {outbox} (of {USERS}); consumer errors: "
                            f"{consumers.errors()}")
            time.sleep(1)
    finally:
        consumers.stop()
        killing.join()
    assert consumers.kills == KILLS and refused <= 5

    events, outbox = _settled(app)
    # Every event stored once and processed (none failed, none left behind).
    assert events == {"processed": TOTAL_EVENTS}, (events, outbox, consumers.errors())
    received = control.sent_messages(channel["channel_id"])
    with app.app_context():
        # Each message event became exactly one stored message.
        messages_in = db.session.scalar(db.select(db.func.count(Message.id)).filter_by(direction="in"))
        assert messages_in == TOTAL_EVENTS - USERS - 2 * REFOLLOWERS
        assert db.session.scalar(db.select(db.func.count(db.distinct(Message.event_id)))
                                 .filter_by(direction="in")) == messages_in
        # The block and the re-follow were applied in order: everyone is a friend again.
        contacts = db.session.scalars(db.select(Contact)).all()
        assert len(contacts) == USERS and not [c for c in contacts if c.blocked_at is not None]
        rows = db.session.scalars(db.select(Outbox)).all()
        by_user = {c.id: c.line_user_id for c in contacts}
        # One form per user: the re-follow within FORM_RESEND_HOURS queued none.
        assert Counter(by_user[r.contact_id] for r in rows) == Counter({u: 1 for u in users})
        sent_ids = {i for r in rows if r.status == "sent" for i in r.line_message_ids}
        unknown_users = {by_user[r.contact_id] for r in rows if r.status == "unknown"}
        db.session.remove()
    # Nobody received two forms; every form LINE holds has its row, sent with LINE's id (or marked unknown:
    # a reply cut short by a kill, which is never sent again).
    per_user = Counter(m["to"] for m in received)
    assert max(per_user.values()) == 1
    for message in received:
        assert message["id"] in sent_ids or message["to"] in unknown_users, message
    assert len(sent_ids) == sum(1 for m in received if m["id"] in sent_ids)
    assert len(received) >= USERS - len(unknown_users)
