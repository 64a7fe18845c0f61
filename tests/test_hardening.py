"""Hardening: sign-in throttling, cookies that end with signing out, security headers, password rules, the
Channel secret never sent back into a page, and ``flask rotate-key``."""
import base64
import hashlib
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.servers import free_port, redis_url
from tests.wizard_helpers import connect, page_text
from wizard import accounts, create_app
from wizard.extensions import db
from wizard.models import Channel

THROTTLED = "失敗的次數太多。為了您帳號的安全，請等"
WRONG = "The e-mail or the password is not right."


def sign_in(client, email, password, **kwargs):
    return client.post("/login?lang=en", data={"email": email, "password": password}, **kwargs)


def signed_in(client, slug):
    """Does this client's cookie open the owner's wizard (or is it sent to the sign-in page)?"""
    return client.get(f"/setup/{slug}/prepare").status_code == 200


def sibling_app(app, **overrides):
    """Another process of the same deployment: same database and keys, its own Flask app."""
    keys = ("INSTANCE_PATH", "DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY", "LINE_API_HOST", "PUBLIC_BASE_URL")
    config = {key: app.config[key] for key in keys}
    return create_app({**config, "TESTING": True, "WTF_CSRF_ENABLED": False, "SANDBOX": False, **overrides})


# --- sign-in throttling ---

def wait_out(client, email, password, bound=10, **kwargs):
    """Try the right password until the delay has passed (tries during it are refused and not counted)."""
    deadline = time.monotonic() + bound
    while True:
        response = sign_in(client, email, password, **kwargs)
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_wrong_passwords_delay_the_next_try_and_the_right_password_is_accepted_once_it_has_passed(
        app, client, make_shop):
    app.config.update(SIGN_IN_FIRST_DELAY=1, SIGN_IN_MAX_DELAY=2)
    slug, email = make_shop()
    for _ in range(4):  # 3 cost nothing, the 4th makes the next try wait a second
        response = sign_in(client, email, "wrong password")
        assert response.status_code == 200 and WRONG in page_text(response)
    # Typed differently (upper case, full-width ＠), it is the same account; even the right password waits.
    throttled = client.post("/login?lang=en",
                            data={"email": email.upper().replace("@", "＠"), "password": "correct horse"})
    assert throttled.status_code == 429
    html = page_text(throttled)
    assert "Too many failed tries." in html and "wait 1 second and try again." in html, html
    assert "the right password is accepted" in html
    assert 'name="password"' in html and 'name="email"' in html  # the form is still there
    assert int(throttled.headers["Retry-After"]) == 1
    assert not signed_in(client, slug)

    started = time.monotonic()
    assert wait_out(client, email, "correct horse").status_code == 302 and signed_in(client, slug)
    assert time.monotonic() - started < 3, "the right password was refused after the delay had passed"


def test_the_delay_grows_with_each_failure_up_to_its_ceiling_and_speaks_chinese(app, make_shop):
    app.config.update(SIGN_IN_FIRST_DELAY=1, SIGN_IN_MAX_DELAY=2)
    slug, email = make_shop()
    client = app.test_client()
    for _ in range(3):
        assert sign_in(client, email, "wrong password").status_code == 200  # free
    retry = []
    for _ in range(4):
        assert wait_out(client, email, "wrong password").status_code == 200
        refused = sign_in(client, email, "wrong password")
        assert refused.status_code == 429
        retry.append(int(refused.headers["Retry-After"]))
    assert retry == [1, 2, 2, 2]
    chinese = app.test_client().post("/login", data={"email": email, "password": "correct horse"})
    assert chinese.status_code == 429 and THROTTLED in page_text(chinese) and "秒後再試" in page_text(chinese)


def test_a_burst_of_parallel_guesses_gets_the_free_tries_and_then_one(app, make_shop, live_app):
    """Twelve wrong passwords sent at once to a real server: each try is counted before its password is
    checked, so only the 3 free ones and then a single one are checked; the rest wait."""
    import requests
    from concurrent.futures import ThreadPoolExecutor
    app.config.update(SIGN_IN_FIRST_DELAY=60)
    slug, email = make_shop()
    barrier = threading.Barrier(12)

    def guess(number):
        barrier.wait(10)
        return requests.post(f"{live_app.url}/login?lang=en", timeout=30,
                             data={"email": email, "password": f"wrong guess {number}"}).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(guess, range(12)))
    assert statuses.count(200) <= 4 and set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1, statuses


def test_successful_sign_ins_do_not_count(client, make_shop):
    slug, email = make_shop()
    for _ in range(8):
        assert sign_in(client, email, "correct horse").status_code == 302
        client.post("/logout")
    assert sign_in(client, email, "wrong password").status_code == 200


def test_one_address_guessing_one_account_does_not_delay_the_owner_elsewhere(app, client, make_shop):
    app.config.update(SIGN_IN_FIRST_DELAY=60)
    slug, email = make_shop()
    guesser = {"REMOTE_ADDR": "198.51.100.7"}
    for _ in range(6):
        sign_in(client, email, "wrong password", environ_base=guesser)
    assert sign_in(client, email, "correct horse", environ_base=guesser).status_code == 429
    owner = app.test_client()
    assert sign_in(owner, email, "correct horse", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 302


def test_one_address_guessing_many_accounts_is_delayed_but_its_known_users_are_not(app, make_shop):
    """An office (or a load balancer) behind one address: a guesser there slows new tries from it, but an
    owner whose browser has signed in before still gets in at once."""
    app.config.update(SIGN_IN_FREE_PER_ADDRESS=4, SIGN_IN_FIRST_DELAY=60)
    slug, email = make_shop()
    office = {"REMOTE_ADDR": "198.51.100.7"}
    owner = app.test_client()
    assert sign_in(owner, email, "correct horse", environ_base=office).status_code == 302
    owner.post("/logout")
    guesser = app.test_client()
    for number in range(5):
        assert sign_in(guesser, f"nobody{number}@example.com", "wrong password",
                       environ_base=office).status_code == 200
    assert sign_in(guesser, email, "correct horse", environ_base=office).status_code == 429
    assert sign_in(owner, email, "correct horse", environ_base=office).status_code == 302
    assert signed_in(owner, slug)
    # The browser's cookie names the account only as a signed hash: a forged or foreign one counts for nothing.
    stranger = app.test_client()
    stranger.set_cookie("known_device", owner.get_cookie("known_device").value[:-2] + "xx")
    assert sign_in(stranger, email, "correct horse", environ_base=office).status_code == 429


def test_many_addresses_guessing_one_account_delay_it_except_for_the_owners_browser(app, make_shop):
    app.config.update(SIGN_IN_FREE_PER_ACCOUNT=4, SIGN_IN_FIRST_DELAY=60)
    slug, email = make_shop()
    owner = app.test_client()
    assert sign_in(owner, email, "correct horse").status_code == 302
    owner.post("/logout")
    botnet = app.test_client()
    for number in range(5):
        assert sign_in(botnet, email, "wrong password",
                       environ_base={"REMOTE_ADDR": f"198.51.100.{number + 1}"}).status_code == 200
    assert sign_in(botnet, email, "correct horse",
                   environ_base={"REMOTE_ADDR": "198.51.100.99"}).status_code == 429
    assert sign_in(owner, email, "correct horse").status_code == 302 and signed_in(owner, slug)


def test_the_current_password_on_the_password_page_is_throttled_like_sign_in(app, client, make_shop, login):
    app.config.update(SIGN_IN_FIRST_DELAY=60)
    slug, email = make_shop()
    login(email)
    change = {"new": "a brand new secret", "confirm": "a brand new secret"}
    for _ in range(4):
        wrong = client.post("/account/password?lang=en", data={"current": "not it at all", **change})
        assert wrong.status_code == 200 and "The current password is not right." in page_text(wrong)
    right = client.post("/account/password?lang=en", data={"current": "correct horse", **change})
    seconds = int(right.headers["Retry-After"])
    assert right.status_code == 429 and 50 < seconds <= 60
    assert f"wait {seconds} seconds and try again." in page_text(right)
    client.post("/logout")
    assert sign_in(client, email, "correct horse").status_code == 429  # the same counts as signing in here
    assert sign_in(client, email, "a brand new secret").status_code == 429  # and nothing was changed


def test_staff_see_a_delayed_account_and_lift_it(app, client, make_shop, make_user, login):
    app.config.update(SIGN_IN_FIRST_DELAY=120)
    slug, email = make_shop()
    owner = app.test_client()
    for _ in range(4):
        sign_in(owner, email, "wrong password")
    assert sign_in(owner, email, "correct horse").status_code == 429

    login(make_user("staff@example.com", staff=True))
    page = client.get("/shops/people/?lang=en")
    row = page_text(page).split(email, 1)[1].split("</tr>", 1)[0]
    assert "Sign-in delayed after failed tries, until" in row and "Lift the sign-in delay" in row
    staff_row = page_text(page).split("staff@example.com", 1)[1].split("</tr>", 1)[0]
    assert "Lift the sign-in delay" not in staff_row

    with app.app_context():
        user_id = accounts.user_by_email(email).id
    lifted = client.post(f"/shops/people/{user_id}/lift-sign-in-delay?lang=en", follow_redirects=True)
    assert f"{email} can try to sign in again now." in page_text(lifted)
    assert "Lift the sign-in delay" not in page_text(lifted)
    assert sign_in(owner, email, "correct horse").status_code == 302 and signed_in(owner, slug)
    audit_page = page_text(client.get("/shops/audit/?lang=en"))
    assert "Sign-in delay lifted" in audit_page and email in audit_page
    # An owner cannot lift anything.
    assert owner.post(f"/shops/people/{user_id}/lift-sign-in-delay").status_code in (403, 404)


def test_the_cli_lifts_an_account_or_an_address(app, runner, make_shop):
    app.config.update(SIGN_IN_FIRST_DELAY=120, SIGN_IN_FREE_PER_ADDRESS=2)
    slug, email = make_shop()
    client = app.test_client()
    office = {"REMOTE_ADDR": "198.51.100.7"}
    for _ in range(4):
        sign_in(client, email, "wrong password", environ_base=office)
    assert sign_in(client, email, "correct horse", environ_base=office).status_code == 429
    result = runner.invoke(args=["user", "unlock", email.upper()])
    assert result.exit_code == 0 and f"Lifted the sign-in delay of {email}." in result.output, result.output
    assert sign_in(client, email, "correct horse", environ_base=office).status_code == 302
    client.post("/logout")

    for number in range(3):
        sign_in(client, f"nobody{number}@example.com", "wrong password", environ_base=office)
    assert sign_in(client, "other@example.com", "correct horse", environ_base=office).status_code == 429
    result = runner.invoke(args=["user", "unlock", "--address", "198.51.100.7"])
    assert result.exit_code == 0 and "Lifted the sign-in delay of address 198.51.100.7." in result.output
    assert sign_in(client, "other@example.com", "wrong password", environ_base=office).status_code == 200
    result = runner.invoke(args=["user", "unlock", "nobody-at-all@example.com"])
    assert result.exit_code == 1 and "No user has the e-mail" in result.output
    with app.app_context():
        from wizard.models import AuditEntry
        actions = db.session.scalars(db.select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["account.sign_in_delay_lifted", "address.sign_in_delay_lifted"]


def redis_or_skip():
    redis = pytest.importorskip("redis")
    url = redis_url(2)  # this worker's own Redis database
    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return url


def test_failed_sign_ins_are_counted_in_redis_across_processes(app, make_user):
    url = redis_or_skip()
    # A new account and client address each run: Redis keeps counts between runs (and across the SQLite and
    # PostgreSQL runs), the address's own count included.
    email = make_user(f"{uuid.uuid4().hex[:12]}@example.com")
    here = {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"}
    shared = {"RATELIMIT_STORAGE_URI": url, "SIGN_IN_FIRST_DELAY": 60}
    first = sibling_app(app, **shared).test_client()
    for _ in range(4):
        assert sign_in(first, email, "wrong password", environ_base=here).status_code == 200
    # A second worker (a new app, so a new store of counts) sees the same count.
    second = sibling_app(app, **shared).test_client()
    assert sign_in(second, email, "correct horse", environ_base=here).status_code == 429
    # Memory storage is per process: there the count would have started again (which is why production
    # with several workers must use Redis).
    alone = sibling_app(app).test_client()
    assert sign_in(alone, email, "correct horse", environ_base=here).status_code == 302


def start_redis(tmp_path, password):
    """A Redis of this test's own (on a free port, with a password), to stop while the app uses it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    redis = pytest.importorskip("redis")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", password],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.exceptions.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.05)


def test_when_redis_stops_sign_in_stays_throttled_in_process_with_one_warning_and_no_traceback(
        app, make_shop, tmp_path, caplog):
    slug, email = make_shop()
    password = "pw-" + uuid.uuid4().hex[:8]
    process, url = start_redis(tmp_path, password)
    try:
        client = sibling_app(app, RATELIMIT_STORAGE_URI=url, SIGN_IN_FIRST_DELAY=60).test_client()
        assert sign_in(client, email, "wrong password").status_code == 200
        import redis
        assert redis.Redis.from_url(url).dbsize() > 0  # counted in Redis (with its password) while it ran
    finally:
        process.terminate()
        process.wait(10)
    caplog.clear()
    with caplog.at_level("INFO"):
        for _ in range(4):
            assert sign_in(client, email, "wrong password").status_code == 200
        refused = sign_in(client, email, "correct horse")
    assert refused.status_code == 429 and not signed_in(client, slug)  # the process counted by itself
    warnings = [record for record in caplog.records if record.levelname in ("WARNING", "ERROR")]
    assert len(warnings) == 1 and "counting in this process" in warnings[0].getMessage(), warnings
    assert all(record.exc_info is None for record in caplog.records), "a traceback was logged"
    assert password not in caplog.text


def test_sign_in_still_works_when_the_throttle_storage_is_unreachable(app, make_shop, caplog):
    slug, email = make_shop()
    client = sibling_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/6").test_client()  # nothing listens
    with caplog.at_level("INFO"):
        assert sign_in(client, email, "wrong password").status_code == 200
        assert sign_in(client, email, "correct horse").status_code == 302 and signed_in(client, slug)
    assert len([record for record in caplog.records if record.levelname == "WARNING"]) == 1
    assert all(record.exc_info is None for record in caplog.records)


def test_flask_limiter_limits_fall_back_to_the_process_too_when_redis_is_unreachable(app, monkeypatch, caplog):
    """The endpoints limited by Flask-Limiter (security.THROTTLED_ENDPOINTS) keep their limits, counted in
    the process, with one warning and no traceback, when the shared store does not answer."""
    from wizard import security
    from wizard.extensions import limiter
    other = sibling_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/6")  # nothing listens

    @other.route("/limited-probe")
    @limiter.limit("2 per minute")
    def limited_probe():
        return "ok"

    monkeypatch.setattr(security, "THROTTLED_ENDPOINTS", frozenset({"limited_probe"}))
    # The extension is one object for every app of the test process: an outage an earlier app saw (this test's
    # other database) would already count as known, and its one warning as given.
    monkeypatch.setattr(limiter, "_storage_dead", False)
    client = other.test_client()
    with caplog.at_level("INFO"):
        assert [client.get("/limited-probe").status_code for _ in range(4)] == [200, 200, 429, 429]
    assert len([record for record in caplog.records if record.levelname in ("WARNING", "ERROR")]) == 1
    assert all(record.exc_info is None for record in caplog.records)


def test_an_unknown_e_mail_takes_as_long_as_a_wrong_password(client, make_shop):
    slug, email = make_shop()

    def seconds(address):
        start = time.perf_counter()
        assert sign_in(client, address, "wrong password").status_code == 200
        return time.perf_counter() - start

    known = statistics.median(seconds(email) for _ in range(3))
    unknown = statistics.median(seconds(f"{uuid.uuid4().hex[:8]}@example.com") for _ in range(3))
    # Without the dummy hash check an unknown address answers in a few milliseconds, a known one in tens.
    assert unknown > known * 0.5, (known, unknown)


# --- cookies ---

def test_session_and_remember_cookies_are_same_site_lax_and_http_only(client, make_shop):
    slug, email = make_shop()
    cookies = sign_in(client, email, "correct horse").headers.getlist("Set-Cookie")
    for name in ("session", "remember_token"):
        (cookie,) = [c for c in cookies if c.startswith(name + "=")]
        assert "SameSite=Lax" in cookie and "HttpOnly" in cookie, cookie
        assert "Secure" not in cookie  # plain http in the embedded default: a Secure cookie would never come back


def test_behind_https_the_cookies_are_secure_and_hsts_is_sent(app, make_shop):
    slug, email = make_shop()
    client = sibling_app(app, PUBLIC_BASE_URL="https://crm.example.com").test_client()
    response = sign_in(client, email, "correct horse", base_url="https://crm.example.com")
    cookies = response.headers.getlist("Set-Cookie")
    for name in ("session", "remember_token"):
        (cookie,) = [c for c in cookies if c.startswith(name + "=")]
        assert "Secure" in cookie and "SameSite=Lax" in cookie, cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("cookie", ["session", "remember_token"])
def test_signing_out_ends_the_session_so_a_copied_cookie_stops_working(app, client, make_shop, cookie):
    slug, email = make_shop()
    assert sign_in(client, email, "correct horse").status_code == 302
    copied = client.get_cookie(cookie).value
    thief = app.test_client()
    thief.set_cookie(cookie, copied)
    assert signed_in(thief, slug)  # the copy works while the owner is signed in

    client.post("/logout")
    assert not signed_in(client, slug)
    thief = app.test_client()
    thief.set_cookie(cookie, copied)
    assert not signed_in(thief, slug)
    # Signing in again works as before.
    assert sign_in(client, email, "correct horse").status_code == 302 and signed_in(client, slug)


# --- headers ---

def test_every_page_says_how_it_may_be_framed_scripted_and_referred(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'",
                      "form-action 'self'", "base-uri 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response.headers  # not on plain http
    assert "no-store" not in response.headers.get("Cache-Control", "")
    assert "Content-Security-Policy" in client.get("/no-such-page").headers


def test_the_pages_carry_no_inline_script_or_style_attribute_the_policy_would_block(client, owner):
    for path in (f"/setup/{owner}/prepare", f"/setup/{owner}/credentials", f"/setup/{owner}/test_friend",
                 "/account/password"):
        html = page_text(client.get(path))
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\sstyle=", html), path
        assert not re.search(r"\son[a-z]+=", html), path


def test_an_inline_style_block_is_allowed_by_its_hash(client):
    response = client.get("/form/not-a-real-token")
    (css,) = re.findall(r"<style>(.*?)</style>", page_text(response), re.S)
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in response.headers["Content-Security-Policy"]


def test_signed_in_pages_are_not_kept_in_the_browser_cache(client, owner):
    assert client.get(f"/setup/{owner}/credentials").headers["Cache-Control"] == "no-store"
    assert client.get("/account/password").headers["Cache-Control"] == "no-store"
    client.post("/logout")
    assert "no-store" not in client.get("/login").headers.get("Cache-Control", "")


# --- passwords ---

@pytest.mark.parametrize("password, code", [
    ("nine char", "password_too_short"),
    ("x" * 257, "password_too_long"),
    ("Owner-Shop@Example.com", "password_is_email"),
    ("OWNER-SHOP", "password_is_email"),  # the part before the @, 10 characters
    ("qwertyuiop", "password_common"),
    ("password1234", "password_common"),
    ("Sunshine2024!", "password_common"),  # a common word with digits and punctuation added
    ("aaaaaaaaaa", "password_too_uniform"),  # 10 identical characters
    ("abab1212ab", "password_too_uniform"),  # 4 different ones
    ("ＡＡＡＡＡａａａａａ!", "password_too_uniform"),  # full-width and upper case are the same letters
])
def test_weak_passwords_are_refused_each_with_its_reason(app, password, code):
    with app.app_context():
        errors = accounts.password_errors(password, email="owner-shop@example.com")
        assert [error.code for error in errors] == [code]
        assert str(errors[0].message) != ""


@pytest.mark.parametrize("password", ["correct horse", ("correct horse battery " * 12)[:256],
                                      "晴天烘焙坊的招牌麵包好吃", "owner-shop-bakery"])
def test_good_passwords_are_accepted(app, password):
    with app.app_context():
        assert accounts.password_errors(password, email="owner-shop@example.com") == []


def test_the_common_list_is_large_and_lower_case():
    common = accounts.common_passwords()
    assert len(common) >= 5000 and "password" in common and "1234567890" in common
    assert all(word == word.lower() for word in common)


def test_the_password_page_names_the_rule_that_was_broken_in_chinese(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    for new, message in [(email.upper(), "密碼不能是這個帳號的電子郵件地址"),
                         ("1234567890", "這是最常見的密碼之一"),
                         ("y" * 300, "密碼最多只能有 256 個字元。"),
                         ("z" * 12, "密碼至少要用 5 個不同的字元，不能只是重複幾個字。")]:
        response = client.post("/account/password", data={"current": "correct horse", "new": new, "confirm": new})
        assert response.status_code == 200 and message in page_text(response)
    client.post("/logout")
    assert sign_in(client, email, "correct horse").status_code == 302  # nothing was changed


def test_user_create_refuses_a_common_password(runner):
    result = runner.invoke(args=["user", "create", "new@example.com", "--password", "iloveyou123"])
    assert result.exit_code == 1 and "one of the most common ones" in result.output


# --- the Channel secret is never sent back ---

def test_a_secret_with_a_format_mistake_is_not_written_back_into_the_page(client, owner):
    typed = "0123456789abcdef0123456789abcde"  # 31 characters
    response = client.post(f"/setup/{owner}/credentials", data={
        "action": "save", "channel_id": "1234567890", "channel_secret": typed})
    html = page_text(response)
    assert response.status_code == 422 and "you entered 31" in html
    assert typed not in html
    (field,) = re.findall(r'<input[^>]*id="channel_secret"[^>]*>', html)
    assert 'type="password"' in field and not re.search(r'value="[^"]', field)
    # Pasted into the Channel ID box by mistake, it is not shown there either.
    swapped = page_text(client.post(f"/setup/{owner}/credentials", data={
        "action": "save", "channel_id": typed + "f", "channel_secret": "1234567890"}))
    assert "the two values seem swapped" in swapped and typed not in swapped


def test_a_secret_line_refused_is_not_written_back_into_the_page(app, client, owner, sandbox):
    channel = sandbox.control.create_channel()
    wrong = uuid.uuid4().hex
    response = connect(client, owner, dict(channel, channelSecret=wrong))
    html = page_text(response)
    assert response.status_code == 422 and "LINE did not accept this Channel secret." in html
    assert wrong not in html and channel["channelId"] in html  # the Channel ID is kept to correct the secret
    # With a working pair saved, a refused new one is not shown either (only the saved one's last 4).
    assert connect(client, owner, channel).status_code in (200, 302)
    html = page_text(connect(client, owner, dict(channel, channelSecret=wrong)))
    assert wrong not in html and channel["channelSecret"] not in html


# --- rotate-key ---

def stored_tokens(app):
    with app.app_context():
        return dict(db.session.execute(db.select(Channel.id, Channel.secret_encrypted)).all())


def test_rotate_key_re_encrypts_every_secret_under_the_new_key_and_loses_none(app, client, runner, owner,
                                                                                sandbox):
    first, second = sandbox.control.create_channel(), sandbox.control.create_channel()
    connect(client, owner, first)
    connect(client, owner, second)  # the first stays stored, disconnected
    before = stored_tokens(app)
    assert len(before) == 2

    old, new = app.config["ENCRYPTION_KEY"], Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEY"] = f"{new}, {old}"
    result = runner.invoke(args=["rotate-key"])
    assert result.exit_code == 0, result.output
    assert "channels.secret_encrypted: 2 re-encrypted" in result.output
    assert "Re-encrypted 2 secret(s) under the first of 2 key(s)" in result.output

    app.config["ENCRYPTION_KEY"] = new  # the old key dropped
    after = stored_tokens(app)
    with app.app_context():
        secrets = {db.session.get(Channel, channel_id).channel_id: db.session.get(Channel, channel_id).secret
                   for channel_id in after}
    assert secrets == {first["channelId"]: first["channelSecret"], second["channelId"]: second["channelSecret"]}
    for token in after.values():
        with pytest.raises(InvalidToken):
            Fernet(old.encode()).decrypt(token.encode())
    # The wizard still proves the saved pair against LINE with only the new key.
    assert "LINE accepted the Channel ID and Channel secret." in page_text(
        client.get(f"/setup/{owner}/credentials"))


def test_rotate_key_refuses_when_a_secret_cannot_be_decrypted_and_changes_nothing(app, client, runner, owner,
                                                                                   sandbox):
    connect(client, owner, sandbox.control.create_channel())
    before = stored_tokens(app)
    app.config["ENCRYPTION_KEY"] = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    result = runner.invoke(args=["rotate-key"])
    assert result.exit_code == 1
    assert "1 stored secret(s) cannot be decrypted with any of the 2 key(s)" in result.output
    assert "nothing was changed" in result.output
    assert stored_tokens(app) == before


def test_rotate_key_refuses_a_key_that_is_not_a_fernet_key(app, runner):
    app.config["ENCRYPTION_KEY"] = "not-a-key," + app.config["ENCRYPTION_KEY"]
    result = runner.invoke(args=["rotate-key"])
    assert result.exit_code == 1 and "not a Fernet key" in result.output
