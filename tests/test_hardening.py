"""Hardening: sign-in throttling, cookies that end with signing out, security headers, password rules, the
Channel secret never sent back into a page, and ``flask rotate-key``."""
import base64
import hashlib
import re
import statistics
import time
import uuid

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.wizard_helpers import connect, page_text
from wizard import accounts, create_app
from wizard.extensions import db
from wizard.models import Channel

THROTTLED = "登入失敗的次數太多。為了您帳號的安全，請等"
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

def test_wrong_passwords_for_one_account_are_throttled_and_then_even_the_right_one_changes_nothing(
        app, client, make_shop):
    slug, email = make_shop()
    for _ in range(5):
        response = sign_in(client, email, "wrong password")
        assert response.status_code == 200 and WRONG in page_text(response)
    # Typed differently (upper case, full-width ＠), it is the same account.
    throttled = client.post("/login", data={"email": email.upper().replace("@", "＠"), "password": "x" * 12})
    assert throttled.status_code == 429
    html = page_text(throttled)
    assert "Too many failed sign-ins." in html and "wait 1 minute and try again." in html
    assert 'name="password"' in html and 'name="email"' in html  # the form is still there
    assert 0 < int(throttled.headers["Retry-After"]) <= 61

    # Another browser, in Chinese, with the right password: still refused, and not signed in.
    other = app.test_client()
    right = other.post("/login", data={"email": email, "password": "correct horse"})
    assert right.status_code == 429 and THROTTLED in page_text(right) and "分鐘後再試" in page_text(right)
    assert not signed_in(other, slug)


def test_successful_sign_ins_do_not_count(client, make_shop):
    slug, email = make_shop()
    for _ in range(8):
        assert sign_in(client, email, "correct horse").status_code == 302
        client.post("/logout")
    assert sign_in(client, email, "wrong password").status_code == 200


def test_one_address_guessing_many_accounts_is_throttled_but_another_address_is_not(app, client, make_shop):
    app.config["SIGN_IN_LIMIT_PER_ADDRESS"] = "4 per minute"
    slug, email = make_shop()
    guesser = {"REMOTE_ADDR": "198.51.100.7"}
    for number in range(4):
        assert sign_in(client, f"nobody{number}@example.com", "wrong password",
                       environ_base=guesser).status_code == 200
    assert sign_in(client, email, "correct horse", environ_base=guesser).status_code == 429
    assert not signed_in(client, slug)
    # The real owner, elsewhere, is not locked out by someone else's guessing.
    assert sign_in(client, email, "correct horse", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 302


def test_failed_sign_ins_are_counted_in_redis_across_processes(app, make_user):
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/5"
    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    # A new account each run: Redis keeps counts between runs (and across the SQLite and PostgreSQL runs);
    # the address limit is raised for the same reason, this test is about the account's count.
    email = make_user(f"{uuid.uuid4().hex[:12]}@example.com")
    shared = {"RATELIMIT_STORAGE_URI": url, "SIGN_IN_LIMIT_PER_ADDRESS": "1000 per minute"}
    first = sibling_app(app, **shared).test_client()
    for _ in range(5):
        assert sign_in(first, email, "wrong password").status_code == 200
    # A second worker (a new app, so a new limiter storage) sees the same count.
    second = sibling_app(app, **shared).test_client()
    assert sign_in(second, email, "correct horse").status_code == 429
    # Memory storage is per process: there the count would have started again (which is why production
    # with several workers must use Redis).
    alone = sibling_app(app).test_client()
    assert sign_in(alone, email, "correct horse").status_code == 302


def test_sign_in_still_works_when_the_throttle_storage_is_down(app, make_shop):
    slug, email = make_shop()
    client = sibling_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0").test_client()  # nothing listens
    assert sign_in(client, email, "wrong password").status_code == 200
    assert sign_in(client, email, "correct horse").status_code == 302 and signed_in(client, slug)


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
])
def test_weak_passwords_are_refused_each_with_its_reason(app, password, code):
    with app.app_context():
        errors = accounts.password_errors(password, email="owner-shop@example.com")
        assert [error.code for error in errors] == [code]
        assert str(errors[0].message) != ""


@pytest.mark.parametrize("password", ["correct horse", "x" * 256, "晴天烘焙坊的招牌麵包好吃", "owner-shop-bakery"])
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
                         ("y" * 300, "密碼最多只能有 256 個字元。")]:
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
