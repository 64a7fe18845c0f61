"""Chunks sent by real queue consumers (``flask --app wizard worker``, as production starts them) while they are
killed with -9 and the database is cut once: every friend receives the message exactly once. And two
consumers at once share LINE's rate limit and never send one chunk twice.

The sandbox plays LINE over HTTP and answers slowly (1.5 s a call), so a kill often lands while a chunk is in
LINE's hands. The database cut: on PostgreSQL the server ends every connection (as a failover does); on
SQLite, which has no server to cut, another process holds the write lock longer than the consumers wait for
it, so each write in that time fails ("database is locked") as it would with the file's disk gone.
"""
import random
import sqlite3
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from tests.processes import Consumer, consumer_env
from tests.test_batches_sending import Line, told  # noqa: F401  (the fixture)
from wizard.extensions import db
from wizard.models import OutgoingBatch
from wizard.outgoing import batches

pytestmark = pytest.mark.system  # consumers of their own, minutes: not in `make check`
# Chunks of 500: enough of them that kills and the cut land in the middle of the run.
FRIENDS = 10_000
KILLS = 4
# The consumers' sweep runs once a minute and re-queues the chunks of a killed consumer after their lease; on a
# busy machine this bound still holds with room.
SETTLE_SECONDS = 400


class Consumers:
    def __init__(self, env, log_dir):
        self.env, self.log_dir, self.running, self.started = env, log_dir, [], 0

    def start(self):
        self.started += 1
        consumer = Consumer(self.env, self.log_dir / f"consumer-{self.started}.log")
        self.running.append(consumer)
        return consumer

    def kill_one(self, rng):
        victim = rng.choice(self.running)
        victim.proc.kill()  # SIGKILL
        victim.proc.wait()
        self.running.remove(victim)
        self.start()

    def errors(self):
        lines = []
        for path in sorted(self.log_dir.glob("consumer-*.log")):
            lines += [f"{path.name}: {line}" for line in path.read_text().splitlines() if "Error" in line]
        return "\n".join(lines[-20:])

    def stop(self):
        for consumer in self.running:
            consumer.stop()


def _cut_the_database(db_url):
    """PostgreSQL: every other connection to the database is ended by the server. SQLite: the write lock is
    held for 7 s, longer than the consumers' busy timeout (5 s)."""
    if db_url.startswith("postgresql"):
        engine = create_engine(db_url)
        with engine.connect() as connection:
            cut = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        engine.dispose()
        assert cut >= 2, "no consumer was connected when the database was cut"
        return
    locker = sqlite3.connect(db_url[len("sqlite:///"):], timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    time.sleep(7)
    locker.rollback()
    locker.close()


def _statuses(app):
    with app.app_context():
        found = dict(db.session.execute(select(OutgoingBatch.status, func.count())
                                        .group_by(OutgoingBatch.status)).all())
        db.session.remove()
    return found


def _settle(app, consumers, chunks):
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = _statuses(app)
        if found == {"sent": chunks}:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the chunks were not all sent {SETTLE_SECONDS} s after the run started: {found} (of "
                        f"{chunks}); consumer errors:\n{consumers.errors()}")
        time.sleep(0.5)


def test_killed_consumers_and_a_cut_database_still_deliver_every_chunk_exactly_once(
        app, sandbox, make_shop, db_url, tmp_path, told):  # noqa: F811
    line = Line(app, sandbox, make_shop, FRIENDS)
    chunks = line.add()
    line.control.fail(line.id, None, delay=1.5)  # LINE answers slowly: kills land mid-call
    consumers = Consumers(consumer_env(app, WORKER_LEASE_SECONDS=2, WORKER_POLL_SECONDS=0.2), tmp_path)
    rng = random.Random(16)
    try:
        for consumer in (consumers.start(), consumers.start()):
            consumer.wait_running()
        with app.app_context():
            assert batches.wake("test_plan", 1)
        for number in range(KILLS):
            time.sleep(rng.uniform(0.5, 1.5))
            consumers.kill_one(rng)
            if number == 1:
                _cut_the_database(db_url)
        _settle(app, consumers, chunks)
    finally:
        consumers.stop()

    assert consumers.started == 2 + KILLS
    assert line.received() == {user: 1 for user in line.users}
    accepted = line.control.sends(line.id, limit=100)
    with app.app_context():
        keys, attempts = zip(*db.session.execute(select(OutgoingBatch.retry_key, OutgoingBatch.attempts)).all(),
                             strict=True)
    assert sorted(send["retryKey"] for send in accepted) == sorted(keys)  # one accepted request per chunk
    assert max(attempts) >= 2, "no kill or cut interrupted a chunk: the test proved nothing"


RATE = 2  # multicast requests a second, for this test (LINE's is 200)
PACED_CHUNKS = 12


def test_two_consumers_share_lines_rate_limit_and_never_send_a_chunk_twice(app, sandbox, make_shop, tmp_path,
                                                                         told):  # noqa: F811
    line = Line(app, sandbox, make_shop, PACED_CHUNKS * 500)
    assert line.add() == PACED_CHUNKS
    consumers = Consumers(consumer_env(app, LINE_MULTICAST_PER_SECOND=RATE, WORKER_POLL_SECONDS=0.2), tmp_path)
    started = time.time()  # no slot comes before this: the pace row is new
    try:
        for consumer in (consumers.start(), consumers.start()):
            consumer.wait_running()
        with app.app_context():
            assert batches.wake("test_plan", 1)
        _settle(app, consumers, PACED_CHUNKS)
    finally:
        consumers.stop()

    assert line.received() == {user: 1 for user in line.users}
    accepted = sorted(line.control.sends(line.id, limit=100), key=lambda send: send["at"])
    assert len({send["retryKey"] for send in accepted}) == len(accepted) == PACED_CHUNKS
    times = [send["at"] for send in accepted]
    # One pace for both consumers: the k-th call LINE sees comes no sooner than k slots (half a second each)
    # after the start. A starved machine only makes calls later, never earlier, so this holds however busy it
    # is; with a pace per consumer (or none) the later calls come seconds too soon.
    early = [(k, round(at - started, 2)) for k, at in enumerate(times) if at < started + k / RATE - 0.05]
    assert not early, f"calls before their slot (k, seconds after the start): {early}"
