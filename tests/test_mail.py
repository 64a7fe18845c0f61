"""E-mail through a real SMTP server (aiosmtpd), or into instance/outbox/ without one; every mail recorded for
staff on /shops/mail/, one-time links hidden there; a mail server that is down or refusing is never a 500."""
import email
import email.policy
import re
from pathlib import Path


from tests.servers import free_port
from tests.wizard_helpers import page_text
from wizard import mail
from wizard.extensions import db
from wizard.models import Invitation, MailMessage, Shop

pytest_plugins = ["tests.smtp_helpers"]  # the smtp_server and smtp_app fixtures
NEW_SHOP = {"slug": "shop-b", "name": "乙店", "owner_email": "b@example.com"}
LINK = re.compile(r"http://127\.0\.0\.1:\d+/invite/([A-Za-z0-9_-]{43})")


def rows(app):
    with app.app_context():
        found = db.session.scalars(db.select(MailMessage).order_by(MailMessage.id)).all()
        db.session.expunge_all()
        return found


def test_a_new_shops_owner_gets_the_invitation_through_the_smtp_server(smtp_app, client, staff, smtp_server):
    response = client.post("/shops/new", data=NEW_SHOP)

    assert response.status_code == 302
    (message,) = smtp_server.messages
    assert message["To"] == "b@example.com"
    assert message["From"] == "Wizard <wizard@example.com>"
    assert "乙店" in message["Subject"] and message["Message-ID"] and message["Date"]
    body = message.get_content()
    assert "乙店" in body
    assert body.index("您好") < body.index("Hello")  # Chinese first, English after it
    assert LINK.search(body), body
    (row,) = rows(smtp_app)
    assert (row.to, row.kind, row.transport, row.error) == ("b@example.com", "invitation", "smtp", None)
    assert "An invitation was sent to b@example.com." in page_text(client.get(response.headers["Location"],
                                                                             follow_redirects=True))


def test_without_a_mail_server_each_mail_is_an_eml_file_in_the_instance_outbox(app, client, staff):
    assert app.config["MAIL_URL"] is None  # the embedded default
    client.post("/shops/new", data=NEW_SHOP)

    files = list((Path(app.instance_path) / "outbox").glob("*.eml"))
    assert len(files) == 1
    saved = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert saved["To"] == "b@example.com" and LINK.search(saved.get_content())
    (row,) = rows(app)
    assert (row.transport, row.error) == ("file", None)


def test_staff_read_every_mail_newest_first_with_the_invitation_link_hidden(smtp_app, client, staff,
                                                                             smtp_server):
    client.post("/shops/new", data=NEW_SHOP)
    client.post("/shops/new", data=dict(NEW_SHOP, slug="shop-c", name="丙店", owner_email="c@example.com"))
    token = LINK.search(smtp_server.messages[0].get_content()).group(1)

    page = page_text(client.get("/shops/mail/"))
    table = page[page.index("<tbody"):]
    assert table.index("c@example.com") < table.index("b@example.com")  # newest first
    assert "<details" in page and "Hello," in page  # the body is there to open
    assert token not in page and "/invite/" not in page
    assert "[link hidden: only the recipient has it]" in page
    with smtp_app.app_context():  # nor is it kept anywhere in the database
        assert all(token not in row.body for row in db.session.scalars(db.select(MailMessage)))


def test_the_mail_page_is_for_staff_only(client, owner):
    assert client.get("/shops/mail/").status_code == 403


def test_a_refusing_mail_server_is_recorded_and_said_never_a_500(smtp_app, client, staff, smtp_server):
    smtp_server.recorder.refuse = "550 5.7.1 Relaying denied"
    response = client.post("/shops/new", data=NEW_SHOP, follow_redirects=True)

    assert response.status_code == 200
    assert "The invitation to b@example.com could not be sent" in page_text(response)
    (row,) = rows(smtp_app)
    assert "Relaying denied" in row.error and row.transport == "smtp"
    with smtp_app.app_context():  # the shop and its invitation stand: staff can send it again
        assert db.session.scalar(db.select(Shop).filter_by(slug="shop-b")) is not None
        assert db.session.scalar(db.select(db.func.count(Invitation.id))) == 1
    assert "Not sent" in page_text(client.get("/shops/mail/"))
    smtp_server.recorder.refuse = None
    client.post("/shops/shop-b/invite", data={"email": ""})
    assert len(smtp_server.messages) == 1 and smtp_server.messages[0]["To"] == "b@example.com"


def test_an_unreachable_mail_server_is_recorded_and_said_never_a_500(app, client, staff):
    app.config.update(MAIL_URL=f"smtp://127.0.0.1:{free_port()}", MAIL_TIMEOUT=3)
    response = client.post("/shops/new", data=NEW_SHOP, follow_redirects=True)

    assert response.status_code == 200
    assert "could not be sent" in page_text(response)
    (row,) = rows(app)
    assert row.error.startswith("ConnectionRefusedError")


def test_a_mail_url_with_a_user_logs_in_and_a_wrong_password_is_an_error_not_a_500(app, client, staff,
                                                                                     smtp_server):
    smtp_server.recorder.login = ("wizard", "p@ss word")
    app.config.update(MAIL_URL=smtp_server.url("wizard", "p%40ss%20word"))
    client.post("/shops/new", data=NEW_SHOP)
    assert [m["To"] for m in smtp_server.messages] == ["b@example.com"]
    assert (smtp_server.recorder.logins[-1][1], rows(app)[-1].error) == (True, None)

    app.config.update(MAIL_URL=smtp_server.url("wizard", "wrong"))
    response = client.post("/shops/shop-b/invite", data={"email": ""}, follow_redirects=True)
    assert response.status_code == 200 and "could not be sent" in page_text(response)
    assert len(smtp_server.messages) == 1
    error = rows(app)[-1].error
    assert error.startswith("SMTPAuthenticationError") and "wrong" not in error


def test_a_mail_url_of_another_scheme_is_an_error_on_the_row(app):
    app.config.update(MAIL_URL="http://mail.example.com")
    with app.app_context():
        row = mail.send("x@example.com", "Subject", "Body", kind="test")
        db.session.commit()
        assert row.error.startswith("MailConfigError") and row.transport == "smtp"
