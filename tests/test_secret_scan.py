"""No secret reaches a log line or a page: a whole realistic run, every log record and every page captured.

Issue 7: werkzeug's request log printed ``/line/webhook/<token>`` (all anyone needs to post to a shop's
receiver) and ``/form/<token>`` (a customer's own details). The run here is what a shop goes through: the
owner connects through the wizard against the LINE sandbox (a wrong secret first), sets and verifies the
webhook, a friend follows and gets the customer form, the customer opens and fills it; then someone presses
"Issue" in LINE, LINE's deliveries are refused, and the owner enters the new secret. Meanwhile staff look at
every shop. Every log record at DEBUG from every logger (the served app's werkzeug request lines included)
and every page the owner and staff get must be free of each Channel secret, each access token the sandbox
issued (the app caches them in wizard/line/client.py), the form token and the webhook token. The masked forms
(``/line/webhook/****``) are fine. The one place the webhook URL may appear is the shop's webhook step, which
shows it to copy into LINE (to the owner, and to staff acting for the shop on that page).
"""
import http.client
import json
import logging
from urllib.parse import urlencode


from tests.wizard_helpers import connect, page_text, status_reason
from wizard.extensions import db
from wizard.line import client as line_client, worker
from wizard.models import Channel, Contact

# SQL echo is left out: it is a developer's switch for their own database (echo=True prints statements, "debug"
# every result row as it is, tokens included: no filter can tell a token from a name in a row). The app's
# engine hides parameters (config.py, hide_parameters); the sandbox's (LINE's imitation, never deployed)
# shares the same logger and does not, so the two cannot be told apart here.
SQL_ECHO = ("sqlalchemy.engine",)


class Seen:
    """Every page body got, with who got it and where."""

    def __init__(self):
        self.pages = []

    def get(self, client, who, path, **kwargs):
        response = client.get(path, **kwargs)
        self.pages.append((who, path, response.status_code, page_text(response)))
        return response

    def post(self, client, who, path, data, follow=True):
        response = client.post(path, data=data, follow_redirects=follow)
        self.pages.append((who, path, response.status_code, page_text(response)))
        return response


def _live(port, method, path, form=None):
    """A request to the served app (so werkzeug writes its request log line, as in `make run`)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = urlencode(form).encode() if form else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    connection.close()
    return response.status, text


def _all_pages(seen, client, who, slug):
    for key in ("prepare", "create_account", "enable_messaging_api", "credentials", "webhook_url",
                "response_settings", "test_friend", "connected"):
        seen.get(client, who, f"/setup/{slug}/{key}")
    seen.get(client, who, f"/setup/{slug}/test_friend/live")
    seen.get(client, who, f"/api/v1/shops/{slug}/status")


def _access_tokens():
    return {token for token, _expires in list(line_client._cache.values())}


def test_no_secret_in_any_log_line_or_page_through_a_whole_run(app, client, owner, make_user, sandbox_control, live_app,
                                                              caplog):
    for name in SQL_ECHO:
        caplog.set_level(logging.WARNING, logger=name)
    caplog.set_level(logging.DEBUG)  # last: set_level also sets the capturing handler's own level
    seen, tokens = Seen(), set()
    staff = app.test_client()
    staff_email = make_user("staff@example.com", staff=True)
    assert staff.post("/login", data={"email": staff_email, "password": "correct horse"}).status_code == 302
    staff.get("/?lang=en")

    # The owner walks the wizard: a wrong secret first, then the right one.
    channel = sandbox_control.create_channel(display_name="晴天烘焙坊")
    seen.post(client, "owner", f"/setup/{owner}/prepare", {"action": "confirm", "line_login": "y"})
    seen.post(client, "owner", f"/setup/{owner}/create_account", {"action": "confirm", "account_created": "y"})
    wrong = seen.post(client, "owner", f"/setup/{owner}/credentials",
                      {"action": "save", "channel_id": channel["channelId"], "channel_secret": "f" * 32})
    assert "did not accept this Channel secret" in page_text(wrong)
    seen.post(client, "owner", f"/setup/{owner}/credentials",
              {"action": "save", "channel_id": channel["channelId"], "channel_secret": channel["channelSecret"]})
    tokens |= _access_tokens()
    seen.post(client, "owner", f"/setup/{owner}/webhook_url", {"action": "set_endpoint"})
    seen.post(client, "owner", f"/setup/{owner}/webhook_url", {"action": "test"})
    seen.post(client, "owner", f"/setup/{owner}/response_settings", {"action": "confirm", "auto_response": "y"})

    # A friend follows; the worker sends the customer form; the customer opens and fills it.
    sandbox_control.follow(channel["channelId"], name="林小美")
    worker.process_pending(app)
    tokens |= _access_tokens()
    with app.app_context():
        saved = db.session.scalar(db.select(Channel))
        webhook_token = saved.webhook_token
        form_token = db.session.scalar(db.select(Contact)).form_token
    # The link went out.
    assert form_token and form_token in json.dumps(sandbox_control.sent_messages(channel["channelId"]))
    assert _live(live_app.port, "GET", f"/form/{form_token}")[0] == 200
    status, _ = _live(live_app.port, "POST", f"/form/{form_token}", {
        "customer_name": "林小美", "phone": "0912345678", "email": "mei@example.com"})
    assert status == 302
    assert _live(live_app.port, "GET", f"/form/{form_token}/thanks")[0] == 200
    _all_pages(seen, client, "owner", owner)
    _all_pages(seen, staff, "staff", owner)
    seen.get(staff, "staff", "/shops/")
    assert _all_connected(client, owner)

    # Someone presses "Issue" in LINE: LINE's deliveries are refused until the owner enters the new secret.
    reissued = sandbox_control.update(channel["channelId"], reissue_secret=True)
    sandbox_control.say(channel["channelId"], text="還在嗎？")
    seen.post(client, "owner", f"/setup/{owner}/credentials", {"action": "recheck"})
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("action_needed", "wrong_secret")
    _all_pages(seen, client, "owner", owner)
    _all_pages(seen, staff, "staff", owner)
    connect(client, owner, reissued)
    tokens |= _access_tokens()
    sandbox_control.verify(channel["channelId"])
    _all_pages(seen, client, "owner", owner)
    seen.get(staff, "staff", "/shops/")

    secrets = {"the Channel secret": channel["channelSecret"], "the reissued Channel secret":
               reissued["channelSecret"], "the form token": form_token, "the webhook token": webhook_token}
    secrets.update({f"access token {n}": token for n, token in enumerate(sorted(tokens))})
    assert tokens, "the sandbox issued no access token: the scan would prove nothing about them"

    # Logs: every record, formatted, with its traceback if any.
    lines = [record.getMessage() + "\n" + (record.exc_text or "") for record in caplog.records]
    for what, value in secrets.items():
        leaks = [line for line in lines if value in line]
        assert not leaks, f"{what} is in the log: {leaks[:3]}"
    masked = [line for line in lines if "/line/webhook/****" in line]
    assert masked and any("/form/****" in line for line in lines), "the request log lines were not captured"

    # Pages: the owner's webhook step shows the webhook URL to copy; nothing else shows any of these.
    shown_on = set()
    for who, path, _status, html in seen.pages:
        for what, value in secrets.items():
            if value not in html:
                continue
            if what == "the webhook token" and path == f"/setup/{owner}/webhook_url":
                # The webhook step shows the URL to copy into LINE: to the owner, and to staff acting for
                # the shop on that same page (they may set it up for the owner).
                shown_on.add((who, path))
                continue
            raise AssertionError(f"{what} is on the {who}'s page {path}")
    assert ("owner", f"/setup/{owner}/webhook_url") in shown_on, "the webhook step no longer shows the URL"


def _all_connected(client, slug):
    return client.get(f"/api/v1/shops/{slug}/status").get_json()["connected"]


def test_a_logged_failure_shows_the_route_but_not_its_token(caplog):
    """What observability.py's JSON handler and the request loggers get: the message and the traceback
    masked, the route still named."""
    from wizard.redact import RedactingFilter, install
    install()
    logger = logging.getLogger("werkzeug")
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        try:
            raise ValueError("could not read http://127.0.0.1/form/SeCrEtToKeN123/thanks")
        except ValueError:
            logger.exception('"POST %s HTTP/1.1" 500', "/line/webhook/AnotherToken_-9")
    record = caplog.records[-1]
    assert record.getMessage() == '"POST /line/webhook/**** HTTP/1.1" 500'
    assert "/form/****/thanks" in record.exc_text and "SeCrEtToKeN123" not in record.exc_text
    assert "AnotherToken" not in caplog.text and "SeCrEtToKeN123" not in caplog.text
    assert RedactingFilter().filter(logging.makeLogRecord({"msg": "Bearer abc.def", "args": None}))
