"""Accounts: sign-in, sign-out, password change, and the CLI that staff use to create them."""
from wizard.extensions import db
from wizard.models import Shop, User


def test_cli_creates_staff_owner_and_shop(app, runner):
    result = runner.invoke(args=["user", "create", "Staff@Example.com", "--staff",
                                 "--password", "s3cret-pass"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["user", "create", "owner@example.com", "--password", "s3cret-pass"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["shop", "create", "sunny", "--name", "晴天", "--owner", "owner@example.com"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        staff = db.session.scalar(db.select(User).filter_by(email="staff@example.com"))
        assert staff.is_staff and staff.password_hash != "s3cret-pass"
        shop = db.session.scalar(db.select(Shop).filter_by(slug="sunny"))
        assert shop.name == "晴天" and [o.email for o in shop.owners] == ["owner@example.com"]


def test_cli_asks_for_password_when_omitted(app, runner):
    result = runner.invoke(args=["user", "create", "ask@example.com"], input="long-enough\nlong-enough\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(email="ask@example.com"))
        assert user.check_password("long-enough")


def test_cli_refuses_bad_input_and_changes_nothing(app, runner, make_user):
    assert runner.invoke(args=["user", "create", "not-an-email", "--password", "long-enough"]).exit_code == 1
    result = runner.invoke(args=["user", "create", "a@example.com", "--password", "short"])
    assert result.exit_code == 1 and "at least 10" in result.output
    result = runner.invoke(args=["shop", "create", "Bad Slug!", "--name", "x", "--owner", "a@example.com"])
    assert result.exit_code == 1 and "shop code" in result.output
    result = runner.invoke(args=["shop", "create", "ok", "--name", "x", "--owner", "nobody@example.com"])
    assert result.exit_code == 1 and "No user" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0
        assert db.session.scalar(db.select(db.func.count(Shop.id))) == 0


def test_sign_in_wrong_password_then_right(client, make_shop):
    slug, email = make_shop()
    response = client.post("/login", data={"email": email, "password": "wrong password"})
    assert response.status_code == 200
    assert "不正確" in response.get_data(as_text=True)  # Traditional Chinese, the default
    response = client.post("/login", data={"email": email.upper(), "password": "correct horse"})
    assert response.status_code == 302


def test_sign_out_ends_the_session(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    assert client.get("/account/password").status_code == 200
    client.post("/logout")
    response = client.get("/account/password")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_password_change(client, app, make_shop, login):
    slug, email = make_shop()
    login(email)
    bad = client.post("/account/password",
                      data={"current": "nope", "new": "brand-new-pass", "confirm": "brand-new-pass"})
    assert bad.status_code == 200
    good = client.post("/account/password", data={"current": "correct horse", "new": "brand-new-pass",
                                                  "confirm": "brand-new-pass"})
    assert good.status_code == 302
    client.post("/logout")
    assert client.post("/login", data={"email": email, "password": "brand-new-pass"}).status_code == 302


def test_login_never_redirects_off_site(client, make_shop):
    slug, email = make_shop()
    response = client.post("/login?next=https://evil.example/",
                           data={"email": email, "password": "correct horse"})
    assert "evil.example" not in response.headers["Location"]


def test_password_change_signs_out_other_sessions(app, make_shop, login, client):
    slug, email = make_shop()
    other = app.test_client()
    other.post("/login", data={"email": email, "password": "correct horse"})
    assert other.get("/account/password").status_code == 200
    login(email)
    client.post("/account/password", data={"current": "correct horse", "new": "brand-new-pass",
                                            "confirm": "brand-new-pass"})
    assert client.get("/account/password").status_code == 200  # the session that changed it stays
    assert other.get("/account/password").status_code == 302  # the other one must sign in again


def test_unknown_wizard_action_is_refused(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    assert client.post(f"/setup/{slug}/prepare", data={"action": "explode"}).status_code == 400


def test_cli_reports_every_problem_of_one_command_at_once(app, runner):
    result = runner.invoke(args=["user", "create", "not-an-email", "--password", "short"])
    assert result.exit_code == 1
    assert "'not-an-email' is not an e-mail address." in result.output
    assert "The password must have at least 10 characters." in result.output

    result = runner.invoke(args=["shop", "create", "Bad Slug!", "--name", " ",
                                 "--owner", "nobody@example.com"])
    assert result.exit_code == 1
    assert "'bad slug!' is not a valid shop code" in result.output
    assert "The shop needs a name." in result.output
    assert "No user has the e-mail nobody@example.com; create it first with 'user create'." in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0
        assert db.session.scalar(db.select(db.func.count(Shop.id))) == 0


def test_sign_in_accepts_the_e_mail_typed_full_width(client, make_shop):
    slug, email = make_shop()
    typed = "　" + email.upper().replace("@", "＠").replace(".", "．") + " "
    response = client.post("/login", data={"email": typed, "password": "correct horse"})
    assert response.status_code == 302


def test_sign_in_with_a_nul_in_the_e_mail_is_just_a_wrong_e_mail(client, make_shop):
    """PostgreSQL refuses a NUL in a query parameter: without the check this was a 500 there."""
    slug, email = make_shop()
    response = client.post("/login?lang=en", data={"email": email + "\x00", "password": "correct horse"})
    assert response.status_code == 200
    assert "The e-mail or the password is not right." in response.get_data(as_text=True)


def test_the_password_rule_is_told_before_it_refuses(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    hint = "至少 10 個字元，其中至少 5 個不同，不能是您的電子郵件地址"
    assert hint in client.get("/account/password").get_data(as_text=True)
    short = client.post("/account/password",
                        data={"current": "correct horse", "new": "short", "confirm": "short"})
    assert short.status_code == 200 and "密碼至少要 10 個字元。" in short.get_data(as_text=True)
    client.post("/logout")
    assert client.post("/login", data={"email": email, "password": "correct horse"}).status_code == 302


def test_a_shop_code_that_names_a_staff_page_is_refused(app):
    """/shops/people/ is the staff's list of people: a shop coded "people" could never reach its own page."""
    from wizard import accounts
    with app.app_context():
        errors = accounts.validate_shop("People", "人事顧問")
        assert [(e.field, e.code) for e in errors] == [("slug", "slug_reserved")]
        assert accounts.validate_shop("people-shop", "人事顧問") == []


def test_the_tests_cheap_password_hash_is_never_used_outside_testing(app, client):
    """The suite hashes with one round of PBKDF2 (PASSWORD_HASH_METHOD); with TESTING off the same setting is
    ignored and a password is hashed with scrypt, and either hash lets its owner sign in."""
    from wizard import accounts
    with app.app_context():
        quick = accounts.create_user("quick@example.com", "correct horse")
        db.session.commit()
        assert quick.password_hash.startswith("pbkdf2:sha256:1$")
        app.config["TESTING"] = False
        try:
            accounts.set_password(quick, "another good passphrase")
            strong = accounts.create_user("strong@example.com", "correct horse")
            db.session.commit()
        finally:
            app.config["TESTING"] = True
        assert quick.password_hash.startswith("scrypt:") and strong.password_hash.startswith("scrypt:")
    for email, password in [("quick@example.com", "another good passphrase"), ("strong@example.com", "correct horse")]:
        assert client.post("/login", data={"email": email, "password": password}).status_code == 302
        client.post("/logout")
