"""Issue 14, items 1, 2 and 10: passive evidence updates a shop's recorded state when it arrives.

The staff list, the list API and the CSV read the recorded state. A shop whose secret was reissued and whose new
friends were refused used to read "healthy" until the next watch round (15.8 minutes); an owner who switched
"Use webhook" back on was e-mailed "broken" a minute after the fix. Here the queue's consumer runs as it does in
production (in this process's threads), the watch's round never runs (its interval is a day), and LINE is the
sandbox over HTTP: its deliveries are signed for real, forged ones with a secret that is not the channel's.
"""
import time

import pytest

from tests.test_signature_pattern import _after_lines_last_delivery, _forge, _webhook_path
from wizard import queue
from wizard.extensions import db
from wizard.models import Alert, Shop, ShopCheck, WebhookRejection

pytest_plugins = ["tests.smtp_helpers", "tests.watch_helpers"]


@pytest.fixture
def consumer(watched):
    """The queue's consumer in this process, with the watch's round a day away (so none runs here)."""
    watched.app.config["WATCH_INTERVAL_MINUTES"] = 24 * 60
    queue.start_in_process(watched.app, threads=2)
    yield watched
    queue.stop_in_process(watched.app)


def _listed(shop):
    """The shop as the staff list API shows it (the recorded state, as the console and the CSV read it)."""
    answer = shop.staff_client().get("/api/v1/shops").get_json()
    return next(row for row in answer["shops"] if row["slug"] == shop.slug)


def _wait_for(shop, state, reason, seconds=15):
    deadline = time.monotonic() + seconds
    row = _listed(shop)
    while time.monotonic() < deadline and (row["state"], row["reason"]) != (state, reason):
        time.sleep(0.2)
        row = _listed(shop)
    assert (row["state"], row["reason"]) == (state, reason), f"after {seconds} s the list still says {row}"
    return row


def _triggers(shop):
    with shop.app.app_context():
        return [check.trigger for check in db.session.scalars(db.select(ShopCheck).order_by(ShopCheck.id))]


def test_a_reissued_secret_shows_in_the_staff_list_within_seconds_of_the_refused_deliveries(consumer):
    shop = consumer
    assert _listed(shop)["state"] == "healthy"
    checks_before = len(_triggers(shop))
    shop.sandbox.control.update(shop.id, reissue_secret=True)
    _after_lines_last_delivery()
    started = time.monotonic()
    for name in ("陳大文", "林小美"):
        assert shop.sandbox.control.follow(shop.id, name=name)["delivery"]["statusCode"] == 400

    row = _wait_for(shop, "broken", "secret_reissued", seconds=10)
    print(f"listed broken {time.monotonic() - started:.1f} s after the first refused delivery")
    with shop.app.app_context():
        run = db.session.scalar(db.select(WebhookRejection).filter_by(reason="bad_signature"))
        first_refused = run.streak_since.replace(microsecond=0).isoformat() + "Z"
    assert row["since"] == first_refused  # since: when the evidence began, not when it was noticed
    # Found by the re-check the evidence asked for; no watch round ran.
    assert _triggers(shop)[checks_before:] and set(_triggers(shop)[checks_before:]) == {"evidence"}
    # The CSV reads the same row; the shop's timeline shows the refused deliveries.
    staff = shop.staff_client()
    csv = staff.get("/shops/export.csv").get_data(as_text=True)
    assert shop.slug in csv and "secret_reissued" in csv
    page = staff.get(f"/shops/{shop.slug}/?lang=en").get_data(as_text=True)
    assert "2 deliveries refused for a wrong signature" in page
    assert [a.reason for a in shop.alerts()] == ["secret_reissued"]


def test_forged_posts_make_the_listed_shop_attention_within_seconds_never_broken(consumer):
    shop = consumer
    path = _webhook_path(shop.app)
    _after_lines_last_delivery()
    _forge(shop.client, path, times=3)
    _wait_for(shop, "attention", "signature_refused", seconds=10)
    _forge(shop.client, path, times=5)  # a flood costs one more re-check per spacing at most, never "broken"
    time.sleep(2)
    assert (_listed(shop)["state"], _listed(shop)["reason"]) == ("attention", "signature_refused")
    assert shop.alerts() == []
    assert _triggers(shop).count("evidence") <= 2


def test_a_delivery_after_the_fix_clears_a_broken_shop_in_the_list_at_once(consumer):
    shop = consumer
    shop.sandbox.control.update(shop.id, webhook_active=False)
    from wizard.watch import drift
    with shop.app.app_context():
        [health] = drift.check_now([db.session.scalar(db.select(Shop))])
        assert (health.state, health.reason) == ("broken", "webhook_inactive")
    shop.sandbox.control.update(shop.id, webhook_active=True)
    shop.sandbox.control.say(shop.id, text="還在嗎？")  # LINE delivers again: "Use webhook" is on
    _wait_for(shop, "healthy", "connected", seconds=10)
    assert [(a.reason, a.closed_at is not None) for a in shop.alerts()] == [("webhook_inactive", True)]


def test_an_alert_that_fresh_evidence_closed_sends_no_mail(watched):
    """Item 2, with no consumer running: the delivery is stored but nothing has re-derived the state yet when
    the alerts' e-mails are due. The mail is re-checked against the newest evidence just before it goes."""
    shop = watched
    shop.sandbox.control.update(shop.id, webhook_active=False)
    from wizard.watch import alerts, drift
    with shop.app.app_context():
        [health] = drift.check_now([db.session.scalar(db.select(Shop))])
        assert (health.state, health.reason) == ("broken", "webhook_inactive")
    assert [a.closed_at for a in shop.alerts()] == [None] and shop.mails_to(shop.owner) == []
    shop.sandbox.control.update(shop.id, webhook_active=True)
    assert shop.sandbox.control.say(shop.id, text="好了嗎？")["delivery"]["statusCode"] == 200
    with shop.app.app_context():
        assert alerts.notify_due() == 0
    assert shop.mails_to(shop.owner) == [] and shop.mails_to(shop.staff) == []
    assert [a.closed_at is not None for a in shop.alerts()] == [True]
    assert shop.status()["state"] == "healthy"


def test_an_alert_still_borne_out_by_the_newest_evidence_is_mailed(watched):
    shop = watched
    shop.sandbox.control.update(shop.id, webhook_active=False)
    from wizard.watch import alerts, drift
    with shop.app.app_context():
        drift.check_now([db.session.scalar(db.select(Shop))])
        assert alerts.notify_due() == 2
        assert db.session.scalar(db.select(Alert)).closed_at is None
    assert len(shop.mails_to(shop.owner)) == 1 and len(shop.mails_to(shop.staff)) == 1


def test_a_burst_of_evidence_queues_one_re_check_and_the_next_waits_for_the_spacing(app, client, owner, sandbox,
                                                                                  live_app):
    """A flood of forged POSTs must not become a flood of LINE calls: of several scans one queues the re-check
    (a second after the evidence), and the next re-check of that shop comes EVIDENCE_SPACING_SECONDS later."""
    from datetime import timedelta

    from tests.test_signature_pattern import _connected
    from wizard.models import ShopHealth, utcnow
    from wizard.watch import evidence
    _connected(client, owner, sandbox.control)
    path = _webhook_path(app)
    _after_lines_last_delivery()
    _forge(client, path, times=3)
    with app.app_context():
        shop_id = db.session.scalar(db.select(Shop.id))
        before = utcnow()
        assert evidence.scan() == [shop_id]
        assert evidence.scan() == []  # queued already: nothing more, however many refusals follow
        first = db.session.get(ShopHealth, shop_id).evidence_check_at
        assert before + evidence.DEBOUNCE <= first <= utcnow() + evidence.DEBOUNCE
    time.sleep(max((first - utcnow()).total_seconds() + 0.05, 0))  # its time has come (no consumer runs it here)
    _forge(client, path)
    with app.app_context():
        assert evidence.scan() == [shop_id]
        second = db.session.get(ShopHealth, shop_id).evidence_check_at
        assert second == first + timedelta(seconds=app.config["EVIDENCE_SPACING_SECONDS"])
