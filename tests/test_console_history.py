"""A shop's history on the console's shop page: each wizard step's changes (models.StepChange, written only when
a step's state or reason changes) and each live check against LINE (models.ShopCheck: what ran it, who, what it
found; bounded per shop), merged into the timeline with state changes, alerts and the audit log."""
import re
from datetime import timedelta

import pytest

from tests.test_console import connect_fully
from tests.wizard_helpers import page_text
from wizard.extensions import db
from wizard.models import Shop, ShopCheck, StepChange, utcnow


def step_rows(html, key):
    """(state, previous state) of the step history's rows for ``key``, newest first."""
    section = html[html.index('id="step-history-title"'):html.index('id="timeline-title"')]
    return re.findall(r'<tr role="row" data-step="%s" data-state="(\w+)" data-previous="(\w*)">' % key, section)


def timeline_checks(html):
    """The timeline's check items as text, newest first."""
    section = html[html.index('id="timeline-title"'):]
    return [re.sub(r"<[^>]+>", "", item).strip()
            for item in re.findall(r'<li class="timeline-check"[^>]*>(.*?)</li>', section, re.S)]


def changes(app, slug):
    with app.app_context():
        shop_id = db.session.scalar(db.select(Shop.id).filter_by(slug=slug))
        return [(c.key, c.state, c.previous_state) for c in db.session.scalars(
            db.select(StepChange).filter_by(shop_id=shop_id).order_by(StepChange.id))]


def checks(app, slug):
    with app.app_context():
        shop_id = db.session.scalar(db.select(Shop.id).filter_by(slug=slug))
        return [(c.trigger, c.actor, c.state, c.reason) for c in db.session.scalars(
            db.select(ShopCheck).filter_by(shop_id=shop_id).order_by(ShopCheck.at, ShopCheck.id))]


def test_a_step_that_breaks_and_is_fixed_shows_each_change_in_order_and_only_changes_are_kept(
        app, client, staff, make_shop, sandbox, live_app):  # noqa: F811
    slug, _email = make_shop()
    line = sandbox.control
    channel = connect_fully(client, slug, line, live_app)
    client.post(f"/shops/{slug}/check")  # the daily checks too (LINE's webhook test), so nothing is left to change
    setup = changes(app, slug)
    # Setting up: each step's first result, then what changed as the owner (here staff) went through.
    assert ("credentials", "todo", None) in setup and ("credentials", "done", "todo") in setup
    assert ("response_settings", "done", "unverifiable") in setup

    # Evaluating again and again, asking LINE afresh each time, adds nothing while nothing changes.
    app.config["CHECK_MAX_AGE"] = 0
    for _ in range(3):
        assert client.get(f"/api/v1/shops/{slug}/status").status_code == 200
        assert client.get(f"/setup/{slug}/webhook_url").status_code == 200
    client.post(f"/shops/{slug}/check")
    assert changes(app, slug) == setup
    # Results forgotten on purpose (a new secret entered …) continue the history, not restart it.
    from wizard.steps.connection import forget_results
    from wizard.steps.status import evaluate
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        forget_results(shop)
        evaluate(shop)
        db.session.commit()
    assert changes(app, slug) == setup

    line.update(channel["channelId"], webhook_active=False)  # someone switches "Use webhook" off
    client.post(f"/shops/{slug}/check")
    client.post(f"/shops/{slug}/check")  # still off: nothing new
    line.update(channel["channelId"], webhook_active=True)  # and on again
    client.post(f"/shops/{slug}/check")
    added = changes(app, slug)[len(setup):]
    assert [change for change in added if change[0] == "response_settings"] == [
        ("response_settings", "action_needed", "done"), ("response_settings", "done", "action_needed")]
    # The friend test waits for step 6 meanwhile: the only other change, there and back.
    assert sorted(change for change in added if change[0] != "response_settings") == [
        ("test_friend", "done", "todo"), ("test_friend", "todo", "done")]

    html = page_text(client.get(f"/shops/{slug}/"))
    history = step_rows(html, "response_settings")
    assert history[:3] == [("done", "action_needed"), ("action_needed", "done"), ("done", "unverifiable")]
    section = html[html.index('id="step-history-title"'):html.index('id="timeline-title"')]
    newest = section[section.index('data-step="response_settings"'):].split("</tr>")[0]
    assert "Step 6: Response settings" in newest and "Done" in newest
    assert "(was: Needs action, “Use webhook” is off in LINE)" in newest
    assert "webhook_inactive" not in section.replace('"webhook_inactive"', "")  # a code, never shown
    # The same page in Chinese: the registry's titles and the State labels, translated.
    chinese = page_text(client.get(f"/shops/{slug}/?lang=zh_Hant_TW"))
    assert "步驟紀錄" in chinese and "需要處理" in chinese


def test_each_check_is_kept_with_what_ran_it_and_what_it_found(
        app, client, staff, make_shop, sandbox, live_app):  # noqa: F811
    slug, _email = make_shop()
    line = sandbox.control
    channel = connect_fully(client, slug, line, live_app)
    before = len(checks(app, slug))
    assert {trigger for trigger, *_ in checks(app, slug)} >= {"staff_page", "api"}  # the pages' own checks

    client.post(f"/shops/{slug}/check")
    line.update(channel["channelId"], webhook_active=False)
    client.post(f"/shops/{slug}/check")
    assert checks(app, slug)[before:] == [
        ("check_now", "staff@example.com", "healthy", "connected"),
        ("check_now", "staff@example.com", "broken", "webhook_inactive")]

    items = timeline_checks(page_text(client.get(f"/shops/{slug}/")))
    assert "Live check by “Check now”: Broken (“Use webhook” is off in LINE)" in items[0]
    assert "staff@example.com" in items[0]
    assert "Live check by “Check now”: Healthy (connected)" in items[1]
    # A page that only reads (the console, the wizard with fresh results) asks LINE nothing and logs no check.
    count = len(checks(app, slug))
    client.get(f"/shops/{slug}/")
    client.get("/shops/")
    assert len(checks(app, slug)) == count


def test_the_watchs_identical_checks_collapse_into_one_line_and_a_different_one_starts_another(
        app, client, staff, make_shop, sandbox, live_app):  # noqa: F811
    from wizard.steps.status import evaluate
    slug, _email = make_shop()
    channel = connect_fully(client, slug, sandbox.control, live_app)
    before = len(checks(app, slug))

    def watch_check():  # the watch's forced evaluation, as drift.check runs it (no request: the watch)
        with app.app_context():
            evaluate(db.session.scalar(db.select(Shop).filter_by(slug=slug)), force=True)
            db.session.commit()
    for _ in range(3):
        watch_check()
    assert checks(app, slug)[before:] == [("watch", None, "healthy", "connected")] * 3

    sandbox.control.update(channel["channelId"], webhook_active=False)
    watch_check()
    items = timeline_checks(page_text(client.get(f"/shops/{slug}/")))
    assert "Live check by the watch: Broken (“Use webhook” is off in LINE)" in items[0] and "alike" not in items[0]
    assert "Live check by the watch: Healthy (connected)" in items[1]
    assert "(3 checks alike, the first at " in items[1]
    assert "Live check by the status API: Healthy (connected)" in items[2]  # connect_fully's, by another


def test_check_all_logs_one_check_per_shop_by_the_watch(app, runner, line):
    assert runner.invoke(args=["line", "check-all", "--json"]).exit_code in (0, 1)
    assert runner.invoke(args=["line", "check-all", "--json"]).exit_code in (0, 1)
    assert [trigger for trigger, *_ in checks(app, line.slug)] == ["watch", "watch"]


def test_the_check_history_keeps_a_month_and_at_most_its_cap_per_shop(app, line, make_shop):
    from wizard.steps.status import evaluate
    other, _email = make_shop("other-shop", "別家店")
    app.config["CHECK_HISTORY_PER_SHOP"] = 4
    now = utcnow()
    with app.app_context():
        ids = {slug: db.session.scalar(db.select(Shop.id).filter_by(slug=slug)) for slug in (line.slug, other)}
        for slug in (line.slug, other):
            db.session.add_all([ShopCheck(shop_id=ids[slug], at=now - timedelta(days=days), trigger="watch",
                                          state="healthy", reason="connected") for days in (45, 31, 3, 2, 1)])
        db.session.commit()
        evaluate(db.session.scalar(db.select(Shop).filter_by(slug=line.slug)), force=True)
        db.session.commit()
        kept = db.session.scalars(db.select(ShopCheck.at).filter_by(shop_id=ids[line.slug])
                                  .order_by(ShopCheck.at)).all()
        # Older than 30 days: gone; of the rest, the newest four (three older ones and this check).
        assert [round((now - at) / timedelta(days=1)) for at in kept] == [3, 2, 1, 0]
        app.config["CHECK_HISTORY_PER_SHOP"] = 2
        evaluate(db.session.scalar(db.select(Shop).filter_by(slug=line.slug)), force=True)
        db.session.commit()
        assert db.session.scalar(db.select(db.func.count()).select_from(ShopCheck)
                                 .filter_by(shop_id=ids[line.slug])) == 2
        # Another shop's rows are its own: trimmed only when it is checked.
        assert db.session.scalar(db.select(db.func.count()).select_from(ShopCheck)
                                 .filter_by(shop_id=ids[other])) == 5


@pytest.mark.parametrize("whose", ["own", "other"])
def test_an_owner_sees_no_shops_history(app, client, make_shop, login, sandbox, live_app, whose):
    slug, email = make_shop()
    other, _other_email = make_shop("other-shop", "別家店")
    login(email)
    client.get("/?lang=en")
    client.get(f"/setup/{slug}/prepare")  # the owner's own page records its steps
    target = slug if whose == "own" else other
    response = client.get(f"/shops/{target}/")
    assert response.status_code == 403
    assert "Step history" not in page_text(response)
    assert "Step history" not in page_text(client.get(f"/setup/{slug}/prepare"))


def test_the_shop_page_says_in_words_what_its_codes_mean(app, client, staff, make_shop, sandbox, live_app):  # noqa: F811
    """Step history, timeline and alert line in Chinese: sentences, never reason or action codes nor "system"."""
    slug, _email = make_shop()
    channel = connect_fully(client, slug, sandbox.control, live_app)
    sandbox.control.update(channel["channelId"], webhook_active=False)
    client.post(f"/shops/{slug}/check")  # broken: an alert opens (by the system) and test_friend waits for step 6
    html = page_text(client.get(f"/shops/{slug}/?lang=zh_Hant_TW"))
    shown = re.sub(r'<[^>]+>', " ", html)  # the text people read, without attributes
    for code in ("fix_step_first", "webhook_inactive", "form_on", "form_settings", "customer form", "— system",
                 "alert.opened", "shop.checked", "not_confirmed"):
        assert code not in shown, code
    assert "等待先修正前面的步驟" in shown  # fix_step_first, in the step history
    assert "LINE 的「使用Webhook」已關閉" in shown  # the step history, the timeline and the alert line
    assert "警示開啟：LINE 的「使用Webhook」已關閉（狀態：已中斷）" in shown
    assert "— 系統（自動）" in shown
