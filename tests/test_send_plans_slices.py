"""A send plan's run written slice by slice (plans/filling.py), end to end against the LINE sandbox: the quota
that ends in the middle of a slice still sends to exactly the first by contact id; a run the database cut off
between two slices is resumed by the next minute and everyone gets the plan once; two workers filling the
same run at once write each slice once; pausing or cancelling a plan while its run is being written holds or
stops what is written and what follows; a consent withdrawn while a broadcast is being written makes it a
multicast without that customer. Slices are a few contacts here (SEND_PLAN_SLICE), so a run of a dozen
friends has several."""
import sqlite3
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, event, func, select, text

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from wizard.extensions import db
from wizard.models import OutgoingBatch, SendPlanRecipient, SendPlanRun, utcnow
from wizard.plans import filling, runs
from wizard.statuses import RecipientOutcome

OFFER = "週年慶全品項 8 折，只到週日！"
PERSONAL = "{name} 您好：週年慶全品項 8 折"


def _due_plan(plan_shop, text=OFFER, **more):
    """A marketing plan to all friends, due now (the minute has come); returns its id."""
    plan = dict(name="週年慶", template_id=plan_shop.template(text), purpose="marketing", audience={"all": True},
                send_at=(utcnow() + timedelta(hours=1)).isoformat() + "Z", up_to_quota=False)
    plan.update(more)
    response = plan_shop.post(**plan)
    assert response.status_code == 201, response.get_data(as_text=True)
    plan_id = response.get_json()["id"]
    plan_shop.make_due(plan_id)
    return plan_id


def _begun(app, plan_id, slices=0):
    """The run as a worker leaves it that died after writing ``slices`` of its slices."""
    with app.app_context():
        run_id = runs.begin(plan_id)
        assert run_id is not None
        assert filling.fill(run_id, slices) == slices
        return run_id


def _run(app, run_id):
    with app.app_context():
        run = db.session.get(SendPlanRun, run_id)
        db.session.expunge(run)
        return run


def _recipients(app):
    """Every recipient row written: (contact id, outcome), by contact."""
    with app.app_context():
        return db.session.execute(select(SendPlanRecipient.contact_id, SendPlanRecipient.outcome)
                                  .order_by(SendPlanRecipient.contact_id)).all()


def _chunked(app):
    """The contact ids in the run's chunks, each as often as it is in one."""
    with app.app_context():
        return sorted(int(pair[0]) for chunk in db.session.scalars(select(OutgoingBatch.recipients))
                      for pair in chunk or ())


@pytest.mark.parametrize("text", [OFFER, PERSONAL], ids=["multicast", "personal"])
def test_the_quota_ending_in_the_middle_of_a_slice_sends_to_exactly_the_first_by_contact_id(app, plan_shop, text):
    app.config["SEND_PLAN_SLICE"] = 4
    plan_shop.control.update(plan_shop.id, quota=7)
    # Every fourth without consent: 9 of 12 consent, 7 messages are left; the slices hold 3, 3 and 3 of them.
    friends = [plan_shop.friend(f"客人{n:02d}", consent=n % 4 != 1) for n in range(12)]
    consenting = [user for n, user in enumerate(friends) if n % 4 != 1]
    plan_id = _due_plan(plan_shop, text, up_to_quota=True)
    plan_shop.send()
    name = {user: f"客人{n:02d}" for n, user in enumerate(friends)}
    assert [plan_shop.received(user) for user in consenting] == (
        [[text.replace("{name}", name[user])] for user in consenting[:7]] + [[], []])
    assert all(plan_shop.received(user) == [] for user in set(friends) - set(consenting))
    outcomes = [outcome for _contact, outcome in _recipients(app)]
    assert outcomes == [RecipientOutcome.SENT if n % 4 != 1 else RecipientOutcome.NO_CONSENT for n in range(10)] + [
        RecipientOutcome.OVER_QUOTA] * 2
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 7 and plan["recipients"] == 7
    assert plan["left_out"] == {"no_consent": 3, "blocked": 0, "over_quota": 2}


@contextmanager
def _database_cut_at(app, db_url, statement, number):
    """The database goes away just before the ``number``-th time the app runs ``statement``: PostgreSQL ends
    every connection of the app (as a failover does); SQLite's write lock is held by another process longer
    than the app waits for it (5 s), so the write fails as it would with the disk gone."""
    seen, cut = [], threading.Event()
    locker = []

    def before(_conn, _cursor, sql, *_args):
        if not sql.lstrip().startswith(statement) or cut.is_set():
            return
        seen.append(sql)
        if len(seen) < number:
            return
        cut.set()
        if db_url.startswith("postgresql"):
            engine = create_engine(db_url)
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            engine.dispose()
        else:
            held = threading.Event()
            thread = threading.Thread(target=_hold_sqlite_lock, args=(db_url[len("sqlite:///"):], held, 6.0))
            thread.start()
            locker.append(thread)
            assert held.wait(10), "the other process could not take SQLite's write lock"

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield cut
    finally:
        event.remove(engine, "before_cursor_execute", before)
        for thread in locker:
            thread.join()


def _hold_sqlite_lock(path, held, seconds):
    connection = sqlite3.connect(path, timeout=30)
    connection.execute("BEGIN EXCLUSIVE")
    held.set()
    threading.Event().wait(seconds)
    connection.rollback()
    connection.close()


def test_a_run_the_database_cut_off_between_slices_goes_on_at_the_next_minute_and_sends_each_once(
        app, plan_shop, db_url):
    app.config["SEND_PLAN_SLICE"] = 3
    friends = [plan_shop.friend(f"客人{n:02d}") for n in range(10)]
    plan_shop.friend("不要廣告", consent=False)  # a multicast, not a broadcast
    plan_id = _due_plan(plan_shop)
    with _database_cut_at(app, db_url, "UPDATE send_plan_runs SET filled_to", 3) as cut:
        plan_shop.tick()  # the minute: the run starts, two slices are written, the third meets the cut
    assert cut.is_set(), "the database was never cut: the test proved nothing"
    with app.app_context():
        run = db.session.scalar(select(SendPlanRun))
        assert run.filling and run.filled_to > 0 and run.recipients == 6, "the cut did not land between slices"
        run_id = run.id
    assert plan_shop.plan(plan_id)["state"] == "sending"
    plan_shop.send()  # the next minute goes on from the cursor
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 10
    assert not _run(app, run_id).filling
    assert len(_recipients(app)) == 11 and len({contact for contact, _ in _recipients(app)}) == 11
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 10 and plan["left_out"]["no_consent"] == 1


def test_two_workers_filling_the_same_run_at_once_write_each_slice_once(app, plan_shop):
    app.config["SEND_PLAN_SLICE"] = 2
    friends = [plan_shop.friend(f"客人{n:02d}") for n in range(12)]
    plan_shop.friend("不要廣告", consent=False)
    run_id = _begun(app, _due_plan(plan_shop))  # its worker died right after writing the run
    ready = threading.Barrier(2)
    written, errors = [], []

    def worker():
        with app.app_context():
            ready.wait(timeout=10)
            try:
                written.append(filling.fill(run_id))
            except Exception as exc:  # a slice written twice would break the recipients' uniqueness
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                db.session.rollback()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and sum(written) == 7, (written, errors)  # 13 contacts, 2 a slice: each slice once
    plan_shop.send()
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 12
    contacts = [contact for contact, _outcome in _recipients(app)]
    assert len(contacts) == 13 and len(set(contacts)) == 13
    assert len(_chunked(app)) == 12 and len(set(_chunked(app))) == 12
    assert plan_shop.plan(_run(app, run_id).plan_id)["sent"] == 12


@pytest.mark.parametrize("text", [OFFER, PERSONAL], ids=["multicast", "personal"])
def test_a_plan_paused_while_its_run_is_being_written_holds_what_is_written_and_what_follows(app, plan_shop, text):
    app.config["SEND_PLAN_SLICE"] = 2
    friends = [plan_shop.friend(f"客人{n}") for n in range(6)]
    plan_shop.friend("不要廣告", consent=False)
    plan_id = _due_plan(plan_shop, text)
    _begun(app, plan_id, slices=1)
    page = f"/c/{plan_shop.slug}/plans/{plan_id}"
    html = plan_shop.client.get(page).get_data(as_text=True)
    assert "Sending: preparing the recipients (2 so far); 0 done." in html and "<progress" not in html
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sending" and plan["recipients"] == 2 and plan["sent"] == 0
    api = f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}"
    response = plan_shop.client.post(api + "/pause", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "paused"
    assert "Paused while its recipients are being prepared (2 so far)" in plan_shop.client.get(page).get_data(
        as_text=True)
    plan_shop.send()  # the minute writes the rest, held; nothing goes
    assert [plan_shop.received(user) for user in friends] == [[]] * 6
    assert plan_shop.plan(plan_id)["recipients"] == 6
    response = plan_shop.client.post(api + "/resume", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "sending"
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[text.replace("{name}", f"客人{n}")]
                                                              for n in range(6)]
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 6 and plan["left_out"]["no_consent"] == 1


@pytest.mark.parametrize("text", [OFFER, PERSONAL], ids=["multicast", "personal"])
def test_a_plan_cancelled_while_its_run_is_being_written_writes_and_sends_no_more(app, plan_shop, text):
    app.config["SEND_PLAN_SLICE"] = 2
    friends = [plan_shop.friend(f"客人{n}") for n in range(6)]
    plan_shop.friend("不要廣告", consent=False)
    plan_id = _due_plan(plan_shop, text)
    run_id = _begun(app, plan_id, slices=1)
    response = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}/cancel", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    plan_shop.send()  # the next minute writes nothing more, and nothing goes
    assert [plan_shop.received(user) for user in friends] == [[]] * 6
    assert not _run(app, run_id).filling
    assert [outcome for _contact, outcome in _recipients(app)] == [RecipientOutcome.CANCELLED] * 2
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "cancelled" and plan["sent"] == 0 and plan["recipients"] == 2
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan_id}").get_data(as_text=True)
    assert '<dd data-count="cancelled">2</dd>' in html and "preparing" not in html


def test_a_service_broadcast_written_in_slices_reaches_every_friend_once_whatever_their_marketing_consent(
        app, plan_shop):
    app.config["SEND_PLAN_SLICE"] = 2
    friends = [plan_shop.friend(f"客人{n}") for n in range(6)]
    plan_id = _due_plan(plan_shop, purpose="service")
    run_id = _begun(app, plan_id, slices=1)
    assert _run(app, run_id).broadcast  # a service plan to all friends, within the quota
    plan_shop.change(friends[4], marketing_consent=False)  # marketing consent: not asked of a service message
    plan_shop.send()
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 6
    assert [sent["kind"] for sent in plan_shop.control.sends(plan_shop.id)] == ["broadcast"]
    assert _run(app, run_id).broadcast
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 6 and plan["left_out"]["no_consent"] == 0


def test_a_run_written_in_slices_counts_like_one_written_whole(app, plan_shop):
    app.config["SEND_PLAN_SLICE"] = 2
    friends = [plan_shop.friend(f"客人{n}") for n in range(5)]
    blocked = plan_shop.friend("封鎖了")
    plan_shop.change(blocked, blocked_at=utcnow())
    plan_shop.friend("不要廣告", consent=False)
    plan_id = _due_plan(plan_shop)
    plan_shop.send()
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 5
    with app.app_context():
        assert db.session.scalar(select(func.count(OutgoingBatch.id))) == 1  # five recipients: one chunk
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["recipients"] == 5 and plan["sent"] == 5
    assert plan["left_out"] == {"no_consent": 1, "blocked": 1, "over_quota": 0}
