"""Bad input never gets a 500: NUL bytes, odd unicode, broken chunked bodies and deep JSON, on every public route.

Issue 7: ``/form/%00``, ``/line/webhook/%00`` or a NUL in a form field reached PostgreSQL (which refuses NUL in
text) and became a 500 without signing in; so did a chunked body with a bad chunk size or cut off in the
middle, and a correctly signed JSON body nested ~960 levels deep (json.loads takes it; the database layer's
serialisation then recursed). Each is now a 4xx with a clear body (JSON for /api/ and /line/webhook/, the
product's own page otherwise), nothing is stored, and nothing is logged as an error. A NUL typed into a form
field is the form's to refuse, under the field, like any other character it does not take.

The hypothesis tests enumerate ``app.url_map``: every route a visitor reaches without signing in (and the
sign-in page) gets generated paths, query strings and form bodies; the receiver gets bodies signed for real
with the channel's secret, and bodies with a wrong or no signature, which must never store anything. Broken
chunked bodies need a real socket (werkzeug's test client always sends a whole body), so they go to the dev
server (werkzeug) and to gunicorn, the production server. Bounded: a few hundred examples in all.
"""
import json
import logging
import os
import re
import socket
import tempfile
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests import topology
from tests.webhooks import encode, make_channel, sign, signed_headers, text_event
from wizard import crypto
from wizard.extensions import db
from wizard.models import Contact, WebhookDelivery, WebhookEvent

# Hypothesis keeps caches in a directory of its own: outside the checkout, where pytest would trip over it.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "wizard-hypothesis"))
FUZZ = settings(max_examples=50, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
RECEIVER_FUZZ = settings(FUZZ, max_examples=60)
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def channel(app, make_shop):
    slug, _ = make_shop()
    return make_channel(app, slug)


@pytest.fixture
def form_token(app, channel):
    """A real customer form link (/form/<token>), as a new friend gets it."""
    with app.app_context():
        contact = Contact(channel_id=channel["id"], line_user_id="U" + "1" * 32, form_token=crypto.new_token())
        db.session.add(contact)
        db.session.commit()
        return contact.form_token


def stored(app):
    with app.app_context():
        return (db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery)),
                db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)))


def assert_clear_refusal(response, path, statuses=(400, 404)):
    """A 4xx with a body that says so: JSON on the machine routes, the product's own page elsewhere."""
    assert response.status_code in statuses, (path, response.status_code)
    if path.startswith(("/api/", "/line/webhook/")):
        assert response.is_json and response.get_json()["message"], path
    else:
        # The product's own page (the error page, or the customer form's "this link does not work"), in the
        # visitor's language; never werkzeug's bare English one.
        html = response.get_data(as_text=True)
        assert 'lang="zh-Hant-TW"' in html and "<h1>" in html and "<title>" in html, path
        assert "The requested URL" not in html and "The browser (or proxy) sent" not in html, path


# ---- NUL bytes: the cases from the issue -----------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("get", "/form/%00"),
    ("post", "/form/%00"),
    ("get", "/form/a%00b/thanks"),
    ("post", "/line/webhook/%00"),
    ("get", "/setup/%00/credentials"),
    ("get", "/api/v1/shops/%00/status"),
    ("get", "/static/%00.css"),
    ("get", "/login?next=%00"),
    ("post", "/login?email=%00"),
    ("get", "/?lang=%00"),
    ("get", "/healthz?%00=1"),
])
def test_a_nul_byte_in_a_path_or_query_is_a_clear_4xx(app, client, channel, method, path):
    before = stored(app)
    response = getattr(client, method)(path)

    # A NUL in the path: no page has that address (404). In the query string: a bad request (400).
    route, _, query = path.partition("?")
    expected = 400 if "%00" in query else 404
    assert response.status_code == expected
    assert_clear_refusal(response, route, (expected,))
    assert stored(app) == before


@pytest.mark.parametrize("fields, says", [
    ({"email": "a\x00b@example.com", "password": "correct horse"}, "The e-mail or the password is not right."),
    ({"email": "owner-sunny-bakery@example.com", "password": "correct\x00horse"},
     "The e-mail or the password is not right."),
    ({"email\x00": "x", "password": "y"}, "Enter your e-mail address."),
])
def test_a_nul_byte_in_the_sign_in_form_is_said_under_the_field(client, owner, fields, says):
    """Forms check their own fields and say what is wrong where it is typed (a bare 400 page would not)."""
    client.post("/logout")
    response = client.post("/login?lang=en", data=fields)
    assert response.status_code == 200 and says in response.get_data(as_text=True)


def test_a_nul_byte_in_the_real_form_link_and_its_fields_saves_nothing(app, client, form_token):
    fields = {"customer_name": "林小美\x00", "phone": "0912345678", "email": "mei@example.com"}
    response = client.post(f"/form/{form_token}?lang=en", data=fields)

    assert response.status_code == 200
    assert "Enter your name without control characters." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(Contact)).customer_name is None
    fields["customer_name"] = "林小美"
    assert client.post(f"/form/{form_token}", data=fields).status_code == 302


# ---- deep nesting: signed, so only the JSON's shape can refuse it ------------------------------------------

@pytest.mark.parametrize("depth", [65, 500, 960, 1500])
def test_signed_json_nested_deeper_than_line_sends_is_refused_and_not_stored(app, client, channel, depth):
    event = text_event("U" + "a" * 32, "hi")
    body = encode({"destination": channel["bot_user_id"], "events": [event]})
    body = body[:-3] + b',"deep":' + b"[" * depth + b"]" * depth + b"}]}"
    if depth <= 500:  # valid JSON all the same (Python's parser itself gives up at about 990 levels)
        assert json.loads(body)["events"][0]["deep"] is not None

    response = client.post(channel["path"], data=body, headers=signed_headers(channel["secret"], body))

    assert response.status_code == 400
    assert response.get_json() == {"message": "The body is nested more than 64 levels deep."}
    assert stored(app) == (0, 0)


def test_what_line_sends_is_never_too_deep(app, client, channel):
    """A message with emojis and mentions (LINE's deepest events) still passes the nesting bound."""
    event = text_event("U" + "a" * 32, "@小美 hi $")
    event["message"]["emojis"] = [{"index": 8, "length": 1, "productId": "5ac1bfd5040ab15980c9b435",
                                   "emojiId": "001"}]
    event["message"]["mention"] = {"mentionees": [{"index": 0, "length": 3, "type": "user",
                                                   "userId": "U" + "b" * 32, "isSelf": False}]}
    body = encode({"destination": channel["bot_user_id"], "events": [event] * 1})
    response = client.post(channel["path"], data=body, headers=signed_headers(channel["secret"], body))
    assert response.status_code == 200 and response.get_json()["stored"] == 1


# ---- every public route, generated input ------------------------------------------------------------------

def _sample_path(rule, value="x"):
    return re.sub(r"<(?:\w+:)?\w+>", value, rule.rule)


def public_routes(app):
    """(rule, method) for each route a visitor without an account reaches (the sign-in page included):
    found by asking, so a new route is fuzzed without anyone listing it here."""
    client = app.test_client()
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(_sample_path(rule), method=method)
            if response.status_code == 302 and "/login?next=" in response.headers.get("Location", ""):
                continue  # needs sign-in
            routes.append((rule, method))
    return routes


# Text as people and scanners type it: NUL and other control characters, full-width and combining forms,
# right-to-left marks, emoji, lone surrogates (sent as their UTF-8-like bytes, i.e. invalid UTF-8).
ODD = st.sampled_from(["\x00", "\x01", "\x7f", "\u200f", "\ufeff", "\uff10", "e\u0301", "😀", "%", "/", "..",
                       "?", "#", "&", "=", "+", "\\", "'", '"', "<", "\n", "\u2028", "\ud800"])
TEXT = st.lists(st.one_of(ODD, st.text(max_size=8)), max_size=6).map("".join)


def _encoded(text):
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


SEGMENT = st.one_of(TEXT.map(_encoded), st.binary(max_size=12).map(lambda raw: quote_from_bytes(raw, safe="")))
PAIRS = st.lists(st.tuples(SEGMENT, SEGMENT), max_size=4).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


def test_every_public_route_answers_generated_input_without_a_500(app, channel, form_token):
    routes = public_routes(app)
    rules = {rule.rule for rule, _method in routes}
    # The pages a stranger reaches: sign-in, the customer form, the webhook, health. Private pages are not here.
    assert {"/login", "/form/<token>", "/line/webhook/<token>", "/healthz"} <= rules
    assert "/setup/<slug>/<key>" not in rules and "/shops/" not in rules
    client = app.test_client()
    before = stored(app)

    @FUZZ
    @given(route=st.sampled_from(routes), segment=st.one_of(SEGMENT, st.just(form_token)), query=PAIRS,
           form=PAIRS, known=st.sampled_from([None, "email", "password", "customer_name", "phone", "birthday"]),
           value=TEXT)
    def check(route, segment, query, form, known, value):
        rule, method = route
        if rule.rule == "/readyz":
            return  # asks the database and the queue each time, with timeouts; its answer never reads input
        path = _sample_path(rule, segment)
        if known:
            form = f"{form}&{known}={_encoded(value)}"
        response = client.open(path, method=method, query_string=query, data=form.encode(), content_type=FORM)
        assert response.status_code < 500, (method, path, query, form)

    check()
    assert stored(app) == before  # nothing arrived with a valid signature


# ---- the receiver: signed for real, and not ---------------------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                         st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(TEXT, st.sampled_from(
        ["type", "timestamp", "webhookEventId", "source", "userId", "mode", "deliveryContext"])), inner,
        max_size=4)), max_leaves=20)


@st.composite
def line_like_bodies(draw):
    """Bodies near LINE's shape: real events with fields replaced, deep nesting, odd text, raw bytes."""
    kind = draw(st.sampled_from(["event", "json", "deep", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    event = text_event("U" + "c" * 32, draw(TEXT))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=1200))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        closer = b"]" if opener == b"[" else b"}"
        body = json.dumps({"destination": "U" + "0" * 32, "events": [event]}, separators=(",", ":")).encode()
        return body[:-3] + b',"deep":' + opener * depth + b"1" + closer * depth + b"}]}"
    for key in draw(st.lists(st.sampled_from(sorted(event) + ["source.userId", "destination"]), max_size=3)):
        if key == "source.userId":
            if isinstance(event.get("source"), dict):  # unless "source" itself was replaced already
                event["source"]["userId"] = draw(JSON)
        else:
            event[key] = draw(JSON)
    payload = {"destination": draw(st.one_of(st.just("U" + "0" * 32), TEXT)), "events": [event]}
    return json.dumps(payload, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def test_signed_bodies_are_stored_or_refused_never_a_500(app, channel):
    client = app.test_client()

    @RECEIVER_FUZZ
    @given(body=line_like_bodies())
    def check(body):
        before = stored(app)
        response = client.post(channel["path"], data=body, headers=signed_headers(channel["secret"], body))
        assert response.status_code in (200, 400), (response.status_code, body[:200])
        assert response.is_json
        if response.status_code == 400:
            assert stored(app) == before
        else:
            assert stored(app)[0] == before[0] + 1  # accepted: its delivery is kept

    check()


def test_without_a_valid_signature_nothing_is_ever_stored(app, channel):
    client = app.test_client()
    real = channel["secret"]

    @RECEIVER_FUZZ
    @given(body=line_like_bodies(), how=st.sampled_from(["none", "other secret", "other body", "garbage"]),
           garbage=TEXT)
    def check(body, how, garbage):
        headers = {"Content-Type": "application/json"}
        if how == "other secret":
            headers["x-line-signature"] = sign("f" * 32, body)
        elif how == "other body":
            headers["x-line-signature"] = sign(real, body + b" ")
        elif how == "garbage":
            # Any bytes a header can carry (a line break would end the header, not be part of it).
            raw = garbage.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
            headers["x-line-signature"] = raw.decode("latin-1")
        response = client.post(channel["path"], data=body, headers=headers)
        assert response.status_code == 400 and response.is_json
        assert stored(app) == (0, 0)

    check()


# ---- broken chunked bodies, on real servers ---------------------------------------------------------------

BROKEN_CHUNKED = {
    "chunk size not a number": b"zz\r\nabc\r\n0\r\n\r\n",
    "negative chunk size": b"-5\r\nabcde\r\n0\r\n\r\n",
    "chunk cut off": b"100\r\nabc",
    "chunk without its CRLF": b"3\r\nabcXY4\r\nabcd\r\n0\r\n\r\n",
    "no last chunk": b"3\r\nabc\r\n",
}


def raw_request(port, method, path, body, headers):
    """Send bytes as they are (werkzeug's test client cannot send a broken body); the answer's status,
    headers and body. The write side is closed after sending, so a server waiting for more sees the end."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, content = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    return status, {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}, content


def _chunked_targets(channel, form_token):
    return [
        (channel["path"], {"Content-Type": "application/json", "x-line-signature": "x" * 44}),
        ("/login", {"Content-Type": FORM}),
        (f"/form/{form_token}", {"Content-Type": FORM}),
    ]


def _check_broken_chunked(app, port, channel, form_token):
    for name, body in BROKEN_CHUNKED.items():
        for path, headers in _chunked_targets(channel, form_token):
            status, answer_headers, content = raw_request(port, "POST", path, body,
                                                          {**headers, "Transfer-Encoding": "chunked"})
            assert status == 400, (name, path, status, content[:300])
            if path.startswith("/line/webhook/"):
                assert json.loads(content)["message"].startswith("The request body could not be read"), name
            else:
                assert b'data-error="400"' in content, (name, path)
    assert stored(app) == (0, 0)
    with app.app_context():
        assert db.session.scalar(db.select(Contact)).customer_name is None


def test_broken_chunked_bodies_are_400_on_the_dev_server(app, channel, form_token, live_app, caplog):
    caplog.set_level(logging.DEBUG)
    _check_broken_chunked(app, live_app.port, channel, form_token)
    # The stream cannot be trusted after a broken body: the dev server is told to close the connection.
    status, headers, _ = raw_request(live_app.port, "POST", "/login", BROKEN_CHUNKED["chunk cut off"],
                                     {"Content-Type": FORM, "Transfer-Encoding": "chunked"})
    assert (status, headers.get("connection", "").lower()) == (400, "close")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


@pytest.fixture
def gunicorn_port(app, db_url, sandbox, tmp_path, app_port):
    """gunicorn wsgi:app (gunicorn.conf.py) on the test's database, one process; yields its port."""
    env = {"WIZARD_DATABASE_URL": db_url, "WIZARD_INSTANCE_PATH": str(tmp_path / "instance"),
           "WIZARD_SECRET_KEY": "test-secret-key", "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": sandbox.url, "WIZARD_WTF_CSRF_ENABLED": "0",
           "WIZARD_PUBLIC_BASE_URL": f"http://127.0.0.1:{app_port}", "WEB_CONCURRENCY": "1",
           "WIZARD_THREADS": "4"}
    port = topology.free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = topology.start_gunicorn(env, port, log=log)
    yield port
    topology.stop(process)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text and '"level": "ERROR"' not in text, text[-3000:]


def test_broken_chunked_bodies_are_400_under_gunicorn(app, channel, form_token, gunicorn_port):
    _check_broken_chunked(app, gunicorn_port, channel, form_token)


def test_generated_chunked_bodies_never_get_a_500(app, channel, form_token, live_app):
    targets = _chunked_targets(channel, form_token)

    @settings(FUZZ, max_examples=30)
    @given(target=st.sampled_from(targets), pieces=st.lists(st.tuples(
        st.one_of(st.integers(min_value=0, max_value=300).map(lambda n: b"%x" % n), st.binary(max_size=6)),
        st.binary(max_size=40), st.sampled_from([b"\r\n", b"\n", b"", b"XY"])), max_size=4),
        end=st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"", b"0\r\nX-Trailer: 1\r\n\r\n"]))
    def check(target, pieces, end):
        path, headers = target
        body = b"".join(size + b"\r\n" + data + tail for size, data, tail in pieces) + end
        status, _, _ = raw_request(live_app.port, "POST", path, body, {**headers, "Transfer-Encoding": "chunked"})
        assert status < 500, (path, body)

    check()
    assert stored(app) == (0, 0)
