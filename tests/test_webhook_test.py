"""LINE's webhook test (the "Verify" of step 5): what the owner is told about each kind of failure, that a
failed test shows as ``webhook_test_failed`` on the page and in the status API, and the hourly cap that keeps
a busy owner below LINE's own limit of 60 tests an hour."""
import html
import re
from datetime import timedelta

import pytest
from flask_babel import force_locale

from tests.servers import Served
from tests.wizard_helpers import connect, page_text, status_reason
from wizard import create_app
from wizard.extensions import db
from wizard.models import Shop, iso_utc, utcnow
from wizard.steps import webhook_test


@pytest.fixture(scope="module")
def babel_app(tmp_path_factory):
    """An app for the translated sentences only (no database work, no LINE)."""
    instance = tmp_path_factory.mktemp("instance")
    return create_app({"INSTANCE_PATH": str(instance), "DATABASE_URL": f"sqlite:///{instance / 'wizard.db'}",
                       "SANDBOX": False, "SECRET_KEY": "test", "ENCRYPTION_KEY": None})


def line_answer(status_code, reason="ERROR_STATUS_CODE", detail=None, success=False):
    """What LINE's POST /v2/bot/channel/webhook/test answers, as ``webhook_test.run`` stores it."""
    return {"success": success, "statusCode": status_code, "reason": reason,
            "detail": detail or str(status_code)}


# (LINE's answer, what the owner must read in it: the cause and what to do about it)
EXPLANATIONS = {
    "reached": (line_answer(200, "OK", success=True), ["LINE reached the CRM and got the right answer."]),
    "404": (line_answer(404), ["the URL was not found (404)", "mistyped", "copy it again"]),
    "300": (line_answer(300), ["answered with a redirect (300)", "Paste the URL exactly as shown"]),
    "301": (line_answer(301), ["answered with a redirect (301)", "Paste the URL exactly as shown"]),
    "308": (line_answer(308), ["answered with a redirect (308)"]),
    "400": (line_answer(400), ["refused LINE's signature (400)", "Channel secret", "step 4"]),
    "401": (line_answer(401), ["access was refused (401)", "firewall or a login page"]),
    "403": (line_answer(403), ["access was refused (403)", "firewall or a login page"]),
    "500": (line_answer(500), ["the CRM's server had an error (500)", "on our side"]),
    "503": (line_answer(503), ["the CRM's server had an error (503)", "on our side"]),
    "timeout": (line_answer(0, "REQUEST_TIMEOUT", "Request timeout"),
                ["did not answer within LINE's 2 seconds", "Try again"]),
    "refused": (line_answer(0, "COULD_NOT_CONNECT", "Connection failed: https://crm.example.com/"),
                ["LINE could not connect to the CRM", "firewall"]),
    "tls": (line_answer(0, "COULD_NOT_CONNECT", "TLS handshake failure: https://crm.example.com/"),
            ["LINE could not connect to the CRM", "certificate (TLS)"]),
    "no answer": (line_answer(0, "UNCLASSIFIED", "N/A"), ["LINE could not connect to the CRM"]),
    "other": (line_answer(418, "UNCLASSIFIED", "N/A"), ["LINE got an unexpected answer (418 UNCLASSIFIED)."]),
    "other 4xx": (line_answer(499), ["LINE got an unexpected answer (499 ERROR_STATUS_CODE)."]),
}
# Answers that mean the same to the owner get the same sentence (apart from the code); all others differ.
SAME_MEANING = [{"300", "301", "308"}, {"401", "403"}, {"500", "503"}, {"refused", "tls", "no answer"},
                {"other", "other 4xx"}]


@pytest.mark.parametrize("case", EXPLANATIONS)
def test_each_failure_is_explained_by_its_cause(babel_app, case):
    answer, words = EXPLANATIONS[case]
    with babel_app.app_context():
        with force_locale("en"):
            english = str(webhook_test.explain(answer))
        with force_locale("zh_Hant_TW"):
            chinese = str(webhook_test.explain(answer))
    for phrase in words:
        assert phrase in english
    assert chinese != english and re.search(r"[\u4e00-\u9fff]", chinese)  # the owner's default language


def test_different_causes_get_different_explanations(babel_app):
    with babel_app.app_context(), force_locale("en"):
        # The status code and LINE's reason in brackets aside, which sentence is it?
        sentences = {case: re.sub(r"\([^)]*\)", "(…)", str(webhook_test.explain(answer)))
                     for case, (answer, _words) in EXPLANATIONS.items()}
    groups = {}
    for case, sentence in sentences.items():
        groups.setdefault(sentence, set()).add(case)
    alone = [{case} for case in EXPLANATIONS if not any(case in same for same in SAME_MEANING)]
    expected = SAME_MEANING + alone
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, expected))


# ---- through the wizard, with the sandbox playing LINE --------------------------------------------------


def answering(status):
    """A stand-in on the CRM's address that answers every request with ``status`` (a proxy in front of the
    CRM failing, say)."""
    def wsgi(environ, start_response):
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response(f"{status} Stand-in", [("Content-Type", "text/plain")])
        return [b"not the CRM"]
    return wsgi


def connected_shop(client, make_shop, login, sandbox):
    """An owner signed in (in English) whose shop has saved credentials and its webhook URL set in LINE."""
    slug, email = make_shop()
    login(email)
    channel = sandbox.control.create_channel()
    connect(client, slug, channel)
    client.post(f"/setup/{slug}/webhook_url?lang=en", data={"action": "set_endpoint"})
    with client.application.app_context():
        token = db.session.scalar(db.select(Shop).filter_by(slug=slug)).channel.webhook_token
    assert sandbox.control.channel(channel["channelId"])["endpoint"].endswith(f"/line/webhook/{token}")
    return slug, channel


def line_tests_of(sandbox, channel):
    return [d for d in sandbox.control.deliveries(channel["channelId"]) if d["kind"] == "test"]


def webhook_step(client, slug):
    steps = client.get(f"/api/v1/shops/{slug}/status").get_json()["steps"]
    return next(step for step in steps if step["key"] == "webhook_url")


def press_test(client, slug):
    return page_text(client.post(f"/setup/{slug}/webhook_url?lang=en", data={"action": "test"},
                                 follow_redirects=True))


@pytest.mark.parametrize("in_front, status_code, words", [
    (503, 503, "the CRM's server had an error (503)"),
    (None, 0, "LINE could not connect to the CRM"),
], ids=["proxy-answers-503", "nothing-listening"])
def test_a_failed_test_shows_webhook_test_failed_until_a_test_passes(app, client, make_shop, login, sandbox,
                                                                      app_port, in_front, status_code, words):
    slug, channel = connected_shop(client, make_shop, login, sandbox)
    app.config["WEBHOOK_TEST_COOLDOWN"] = 0
    stand_in = Served(answering(in_front), port=app_port) if in_front else None
    try:
        press_test(client, slug)
    finally:
        if stand_in:
            stand_in.stop()

    [test] = line_tests_of(sandbox, channel)
    assert (test["success"], test["statusCode"]) == (False, status_code)
    step = webhook_step(client, slug)
    assert (step["state"], step["reason"]) == ("action_needed", "webhook_test_failed")
    assert step["message"].startswith("LINE's test call to the webhook URL failed: ")
    assert words in step["message"]
    page = client.get(f"/setup/{slug}/webhook_url")
    assert status_reason(page) == ("action_needed", "webhook_test_failed")
    assert words in html.unescape(page_text(page))

    # The CRM itself answers on its address now: the next test passes and the step is done.
    served = Served(app, port=app_port)
    try:
        press_test(client, slug)
    finally:
        served.stop()
    assert line_tests_of(sandbox, channel)[0]["success"] is True
    step = webhook_step(client, slug)
    assert (step["state"], step["reason"]) == ("done", "webhook_verified")


def write_history(app, slug, times):
    """Tests the owner made earlier, as ``webhook_test.run`` records them."""
    with app.app_context():
        channel = db.session.scalar(db.select(Shop).filter_by(slug=slug)).channel
        channel.check_results = {**(channel.check_results or {}),
                                 "webhook_test_history": [iso_utc(t) for t in times]}
        db.session.commit()


def test_the_51st_test_within_an_hour_waits_until_the_oldest_is_an_hour_old(app, client, make_shop, login,
                                                                           sandbox, live_app):
    slug, channel = connected_shop(client, make_shop, login, sandbox)
    app.config["WEBHOOK_TEST_COOLDOWN"] = 0  # only the hourly cap holds the owner back here
    assert webhook_test.HOURLY_CAP == 50
    oldest = utcnow() - timedelta(minutes=59)
    # 49 tests in the past hour, the oldest 59 minutes ago, the newest 11 minutes ago; one from before that.
    write_history(app, slug, [oldest - timedelta(minutes=5)] + [oldest + timedelta(minutes=n)
                                                                for n in range(49)])

    allowed = press_test(client, slug)  # the 50th within the hour
    assert "Please wait" not in allowed
    assert len(line_tests_of(sandbox, channel)) == 1

    refused = press_test(client, slug)  # the 51st
    assert len(line_tests_of(sandbox, channel)) == 1  # LINE was not asked
    wait = int(re.search(r"LINE allows only a few tests an hour\. Please wait (\d+) seconds\.",
                         refused).group(1))
    assert 50 <= wait <= 61  # the oldest test turns an hour old in a minute (less the seconds this test took)

    with app.app_context():
        saved = db.session.scalar(db.select(Shop).filter_by(slug=slug)).channel
        assert len(saved.check_results["webhook_test_history"]) == 50  # the one from before the hour is gone
        an_hour_after_oldest = oldest + timedelta(hours=1)
        ten_seconds_before = an_hour_after_oldest - timedelta(seconds=10)
        assert webhook_test.seconds_until_allowed(saved, now=ten_seconds_before) == 11
        assert webhook_test.seconds_until_allowed(saved, now=an_hour_after_oldest) == 0

    # An hour after the oldest (its history shifted back a minute), the owner may test again.
    write_history(app, slug, [oldest - timedelta(minutes=1)] + [oldest + timedelta(minutes=n)
                                                                for n in range(49)])
    assert "Please wait" not in press_test(client, slug)
    assert len(line_tests_of(sandbox, channel)) == 2
