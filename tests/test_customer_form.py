"""The customer data form end to end, against the LINE sandbox over real HTTP and with the shop's own settings:
what new friends receive (or not), their personal signed link, the page in their language, the PDPA notice
and the evidence each submission leaves."""
import re
import time

import pytest
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from wizard.customers import form_settings, links, notice
from wizard.extensions import db
from wizard.line import worker
from wizard.models import Contact, FormNotice, FormSubmission, Shop

TEXT = "歡迎加入晴天烘焙坊！請填寫客戶資料，生日當月有小禮物。"
LINK = re.compile(r"(https?://[^\s]+/form/([^\s/]+))")


def configure(app, slug, **change):
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        settings, problems = form_settings.validate(shop, change)
        assert not problems, problems
        form_settings.save(settings, "test")
        db.session.commit()


def link_in(text):
    match = LINK.search(text)
    assert match, text
    return match.group(1), "/form/" + match.group(2)


def evidence(app):
    with app.app_context():
        rows = db.session.scalars(db.select(FormSubmission).order_by(FormSubmission.id)).all()
        db.session.expunge_all()
        return rows


@pytest.fixture
def friend(app, line):
    """A new friend who received the shop's form; returns (user id, the path of their link)."""
    configure(app, line.slug, text=TEXT)
    user_id = line.follow(name="林小美")
    worker.process_pending(app)
    [received] = line.control.sent_messages(line.id, user_id)
    return user_id, link_in(received["message"]["text"])[1]


DETAILS = {"customer_name": "林小美", "phone": "0912 345 678", "email": "mei@example.com", "birthday": "1990-05-31"}


# ---- what new friends receive ------------------------------------------------------------------------------

def test_the_configured_text_goes_out_with_a_personal_link(app, client, line):
    configure(app, line.slug, text=TEXT)
    user_id = line.follow(name="林小美", language="en")  # the owner's own text is sent as written

    worker.process_pending(app)

    [received] = line.control.sent_messages(line.id, user_id)
    assert received["kind"] == "reply"
    text = received["message"]["text"]
    assert text.startswith(TEXT + "\n")
    url, path = link_in(text)
    assert url.startswith(app.config["PUBLIC_BASE_URL"] + "/form/")
    contact = line.contact(user_id)
    assert path == f"/form/{contact.form_token}"
    with app.app_context():  # at rest the token is encrypted and hashed, never in plain
        row = db.session.execute(db.text("SELECT * FROM contacts")).mappings().one()
        assert contact.form_token not in str(dict(row))
    page = client.get(path)
    assert page.status_code == 200 and 'value="林小美"' in page.get_data(as_text=True)


def test_a_form_switched_off_sends_nothing_at_all(app, line):
    configure(app, line.slug, enabled=False)
    user_id = line.follow(name="林小美")

    worker.process_pending(app)

    assert line.control.sent_messages(line.id) == []
    assert line.outbox() == []  # nothing queued either
    [event] = line.events()
    assert (event.status, event.error) == ("processed", "form switched off by the shop: not sent")
    contact = line.contact(user_id)  # the friend is still a contact, with the profile LINE gave
    assert contact.display_name == "林小美" and contact.form_sent_at is None

    configure(app, line.slug, enabled=True)  # switched on again: the next new friend receives it
    other = line.follow()
    worker.process_pending(app)
    assert len(line.control.sent_messages(line.id, other)) == 1


def test_an_expired_reply_token_means_a_push_with_its_retry_key_and_the_configured_text(app, line):
    configure(app, line.slug, text=TEXT)
    user_id = line.follow()
    line.control.expire_reply_tokens(line.id)

    worker.process_pending(app)

    [received] = line.control.sent_messages(line.id, user_id)
    [row] = line.outbox()
    assert (received["kind"], received["delivered"], row.method, row.status) == ("push", True, "push", "sent")
    assert received["retryKey"] == row.retry_key
    assert received["message"]["text"].startswith(TEXT)


def test_a_redelivered_follow_sends_one_message(app, line):
    configure(app, line.slug, text=TEXT)
    user_id = line.follow()
    again = line.control.redeliver(line.id)["delivery"]
    assert again["statusCode"] == 200

    worker.process_pending(app)
    worker.process_pending(app)

    assert len(line.events()) == 1
    assert len(line.control.sent_messages(line.id, user_id)) == 1
    assert len(line.outbox()) == 1


def test_unblocking_soon_after_sends_nothing_and_later_a_new_link_that_still_knows_the_customer(app, client,
                                                                                                line):
    configure(app, line.slug, text=TEXT)
    user_id = line.follow()
    worker.process_pending(app)
    first_link = link_in(line.control.sent_messages(line.id, user_id)[0]["message"]["text"])[1]
    assert client.get(first_link).status_code == 200
    line.act(line.control.unfollow(line.id, user_id))
    worker.process_pending(app)
    blocked = client.get(first_link + "?lang=en")  # blocking the account ends the link
    assert blocked.status_code == 410 and "This link no longer works" in blocked.get_data(as_text=True)
    line.follow(user_id)
    worker.process_pending(app)
    assert len(line.control.sent_messages(line.id, user_id)) == 1
    assert line.events()[-1].error == "form sent recently: not sent again"
    assert client.get(first_link).status_code == 410  # following again does not bring it back

    app.config["FORM_RESEND_HOURS"] = 0  # a day later
    line.act(line.control.unfollow(line.id, user_id))
    line.follow(user_id)
    worker.process_pending(app)
    first, second = line.control.sent_messages(line.id, user_id)
    old, new = link_in(first["message"]["text"])[1], link_in(second["message"]["text"])[1]
    assert second["message"]["text"].startswith(TEXT) and old != new
    assert client.get(new).status_code == 200  # the newest link knows the customer
    for method in ("get", "post"):  # the older one no longer opens or changes anything
        answer = getattr(client, method)(old + "?lang=en", data=DETAILS)
        assert answer.status_code == 410 and "Nothing was changed." in answer.get_data(as_text=True)
    assert line.contact(user_id).form_filled_at is None
    assert client.post(new, data=DETAILS).status_code == 302

    line.act(line.control.unfollow(line.id, user_id))
    line.follow(user_id)
    worker.process_pending(app)  # the form is filled in: never sent again
    assert len(line.control.sent_messages(line.id, user_id)) == 2
    assert line.events()[-1].error == "form already filled in: not sent"


# ---- the link -----------------------------------------------------------------------------------------------

def test_a_tampered_link_gets_a_friendly_page_and_changes_nothing(app, client, friend):
    user_id, path = friend
    token = path.removeprefix("/form/")
    payload, stamp, signature = token.rsplit(".", 2)
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        other_shop = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=links.SALT).dumps(
            [contact.id, contact.id + 1000, links._user_tag(user_id)])  # signed, but for another shop
        other_user = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=links.SALT).dumps(
            [contact.id, 1, links._user_tag("U" + "0" * 32)])
    forged = URLSafeTimedSerializer("not-our-key", salt=links.SALT).dumps([contact.id, 1, links._user_tag(user_id)])
    changed = [
        # One character of the signature: the first, since the last one's low bits are padding that decodes to
        # the same bytes (A, B, C and D end a 27-character signature alike).
        f"{payload}.{stamp}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}",
        f"{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{stamp}.{signature}",  # ... of what it signs
        f"{payload}.{stamp}", forged, other_shop, other_user,
    ]
    for bad in changed:
        for method in ("get", "post"):
            response = getattr(client, method)(f"/form/{bad}?lang=en", data=DETAILS)
            html = response.get_data(as_text=True)
            assert response.status_code == 404, bad
            assert "This link does not work" in html and "Nothing was changed." in html
        assert client.get(f"/form/{bad}/thanks").status_code == 404
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        assert (contact.customer_name, contact.form_filled_at) == (None, None)
    assert evidence(app) == []


def test_an_expired_link_gets_a_friendly_page_and_changes_nothing(app, client, line, monkeypatch):
    configure(app, line.slug, text=TEXT)
    line.follow()
    month_ago = int(time.time()) - 31 * 86400
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: month_ago)
    worker.process_pending(app)  # the link was sent 31 days ago
    monkeypatch.undo()
    [received] = line.control.sent_messages(line.id)
    path = link_in(received["message"]["text"])[1]

    for response in (client.get(path + "?lang=en"), client.post(path + "?lang=en", data=DETAILS),
                     client.get(path + "/thanks?lang=en")):
        assert response.status_code == 410
        html = response.get_data(as_text=True)
        assert "This link has expired" in html and "Nothing was changed." in html
    assert line.contact(line.control.sent_messages(line.id)[0]["to"]).form_filled_at is None
    assert evidence(app) == []

    app.config["FORM_LINK_DAYS"] = 60  # a longer lifetime (configuration) lets it work again
    assert client.get(path).status_code == 200


def test_a_link_from_before_links_were_signed_works_until_its_lifetime_ends(app, client, friend):
    from wizard import crypto
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        contact.form_token = old = crypto.new_token()  # an unsigned random token, as links were
        db.session.commit()
    assert client.get(f"/form/{old}").status_code == 200
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        contact.form_link_issued_at = contact.form_link_issued_at.replace(year=2000)
        db.session.commit()
    assert client.get(f"/form/{old}?lang=en").status_code == 410


# ---- the page -----------------------------------------------------------------------------------------------

def test_the_page_speaks_the_customers_language_and_shows_the_notice_before_the_button(app, client, friend, line):
    _user, path = friend
    html = client.get(path).get_data(as_text=True)  # the LINE profile says zh-TW
    assert '<html lang="zh-Hant-TW">' in html
    for words in ("聯絡資料", "晴天烘焙坊", "○九○ 消費者、客戶管理與服務", "○四○ 行銷", "C○○一 辨識個人者",
                  "C○一一 個人描述", app.config["CRM_VENDOR_NAME"], "個人資料保護法第 3 條",
                  "LINE 使用者 ID、顯示名稱、大頭貼與語言"):  # what the CRM keeps besides the form
        assert words in html, words
    assert html.index('class="privacy-notice"') < html.index('type="submit"')
    # The notice speaks of the marketing box "below": it comes after the notice, before the submit button.
    assert html.index('class="privacy-notice"') < html.index('name="marketing"') < html.index('type="submit"')
    assert "身分證" not in html.split('class="privacy-notice"')[0]  # no national ID field

    english = line.follow(language="en")
    worker.process_pending(app)
    [received] = line.control.sent_messages(line.id, english)
    page = client.get(link_in(received["message"]["text"])[1]).get_data(as_text=True)
    assert '<html lang="en">' in page and "Your contact details" in page
    assert "○九○ consumer and customer management and services" in page
    assert "to have it deleted (PDPA Art. 3)" in page and "If you leave something out" in page


def test_gender_and_city_are_asked_when_the_shop_asks_them(app, client, friend):
    _user, path = friend
    with app.app_context():
        slug = db.session.scalar(db.select(Shop.slug))
    configure(app, slug, fields={"gender": "required", "city": "optional", "email": "off", "birthday": "off"})
    html = client.get(path + "?lang=en").get_data(as_text=True)
    assert 'name="email"' not in html and 'name="birthday"' not in html
    assert html.count('<option value="') == 1 + 4 + 1 + 22  # “choose…”, genders, “choose…”, 22 cities
    assert "City or county (optional)" in html and "Penghu County" in html

    data = {"customer_name": "林小美", "phone": "0912345678", "gender": "", "city": "XXX"}
    html = client.post(path + "?lang=en", data=data).get_data(as_text=True)
    assert "Choose your gender, or “Prefer not to say”." in html and "Choose one of the list." in html
    assert client.post(path, data=dict(data, gender="undisclosed", city="PEN")).status_code == 302
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        assert (contact.gender, contact.city, contact.email) == ("undisclosed", "PEN", None)
        assert evidence(app)[0].fields == ["name", "mobile", "gender", "city"]


def test_csrf_protects_the_form(app, client, friend):
    _user, path = friend
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post(path, data=DETAILS).status_code == 400
    assert evidence(app) == []
    html = client.get(path).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    assert client.post(path, data=dict(DETAILS, csrf_token=token)).status_code == 302


# ---- submissions and their evidence -------------------------------------------------------------------------

def test_each_submission_keeps_its_evidence_and_a_second_one_updates_the_contact(app, client, friend):
    user_id, path = friend
    page = client.get(path).get_data(as_text=True)
    version = re.search(r'data-notice-version="([0-9a-f]{12})"', page).group(1)
    headers = {"User-Agent": "Mozilla/5.0 (Linux; Android 14) Line/14.0"}

    first = client.post(path, data=dict(DETAILS, marketing="y"), headers=headers,
                        environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert first.status_code == 302 and first.headers["Location"].endswith(path + "/thanks")
    thanks = client.get(first.headers["Location"] + "?lang=en").get_data(as_text=True)
    assert "Thank you, 林小美!" in thanks and f'href="{path}"' in thanks

    second = client.post(path, data=dict(DETAILS, customer_name="林美美", email="", birthday=""),
                         environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert second.status_code == 302

    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        # The fields left empty keep what was saved (the page showed them only masked).
        assert (contact.customer_name, contact.phone, contact.email, contact.birthday.isoformat()) == (
            "林美美", "0912345678", "mei@example.com", "1990-05-31")
        assert contact.marketing_consent is False and contact.marketing_consent_at is not None  # withdrawn
        shop_id = db.session.scalar(db.select(Shop.id))
        kept = db.session.scalar(db.select(FormNotice).filter_by(version=version))
        assert kept.shop_id == shop_id and kept.content["collector"] == "晴天烘焙坊"
        assert kept.content["processor"] == app.config["CRM_VENDOR_NAME"]
        assert notice.version(kept.content) == version
    one, two = evidence(app)
    assert (one.line_user_id, one.contact_id, one.shop_id) == (user_id, contact.id, shop_id)
    assert (one.notice_version, two.notice_version) == (version, version)
    assert (one.purposes, one.marketing, two.purposes, two.marketing) == (["090", "040"], True, ["090"], False)
    assert one.fields == two.fields == ["name", "mobile", "email", "birthday"]
    assert (one.address, two.address) == ("203.0.113.7", "198.51.100.2")
    assert one.user_agent == headers["User-Agent"] and one.at <= two.at
    assert one.locale == "zh_Hant_TW"
    assert "0912345678" not in str(one.__dict__) and "mei@example.com" not in str(one.__dict__)  # names only


def test_a_new_notice_gets_a_new_version_which_the_next_submission_records(app, client, friend):
    _user, path = friend
    assert client.post(path, data=DETAILS).status_code == 302
    with app.app_context():
        slug = db.session.scalar(db.select(Shop.slug))
    configure(app, slug, text="只改訊息文字")  # the message is not the notice: same version
    assert client.post(path, data=DETAILS).status_code == 302
    configure(app, slug, notice={"contact_email": "privacy@sunny.example", "retention_years": 2})
    html = client.get(path + "?lang=en").get_data(as_text=True)
    assert "write to privacy@sunny.example" in html and "for 2 year(s) after your last contact" in html
    assert client.post(path, data=DETAILS).status_code == 302
    versions = [row.notice_version for row in evidence(app)]
    assert versions[0] == versions[1] != versions[2]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(FormNotice)) == 2


def test_a_notice_changed_while_the_page_was_open_keeps_nothing_until_read_again(app, client, friend):
    """The evidence names the notice the customer read: a submit from a page showing an older one is not it."""
    from wizard.customers import form_settings
    from wizard.models import Contact, FormSubmission, Shop
    _user_id, path = friend
    page = client.get(path).data.decode()
    shown = re.search(r'name="seen_notice" type="hidden" value="([^"]+)"', page).group(1)
    with app.app_context():  # the owner changes the privacy notice meanwhile
        shop = db.session.scalar(db.select(Shop))
        settings = form_settings.get(shop)
        settings.notice = dict(settings.notice, retention_years=3)
        form_settings.save(settings)
        db.session.commit()
    answer = client.post(path, data={"customer_name": "林小美", "phone": "0912345678", "seen_notice": shown})
    assert answer.status_code == 200 and "data-notice-changed" in answer.data.decode()
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(FormSubmission.id))) == 0
        assert db.session.scalar(db.select(Contact.form_filled_at)) is None
    again = re.search(r'name="seen_notice" type="hidden" value="([^"]+)"', answer.data.decode()).group(1)
    assert again != shown
    done = client.post(path, data={"customer_name": "林小美", "phone": "0912345678", "seen_notice": again})
    assert done.status_code == 302


def test_a_birthday_typed_in_full_width_digits_is_kept_as_the_date(app, client, friend):
    import datetime
    from wizard.models import Contact
    _user_id, path = friend
    done = client.post(path, data={"customer_name": "林小美", "phone": "０９１２３４５６７８",
                                   "birthday": "１９９０-０５-３１"})
    assert done.status_code == 302
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        assert (contact.birthday, contact.phone) == (datetime.date(1990, 5, 31), "0912345678")


def test_the_consent_record_is_on_the_contacts_page(app, client, friend, make_user):
    from wizard.models import Contact
    _user_id, path = friend
    client.post(path, data=dict(DETAILS, marketing="y"))
    staff = app.test_client()
    email = make_user("staff@example.com", staff=True)
    assert staff.post("/login", data={"email": email, "password": "correct horse"}).status_code == 302
    with app.app_context():
        contact_id = db.session.scalar(db.select(Contact.id))
    page = staff.get(f"/c/contacts/{contact_id}?lang=en").data.decode()
    assert "Consent record (1)" in page
    assert re.search(r'data-notice-version="[0-9a-f]{12}"', page)
    assert "purposes 090, 040" not in page and "fields given: name" not in page  # words, not codes
    assert re.search(r"On \d{4}-\d\d-\d\d \d\d:\d\d \(Taipei time\) the customer read the privacy notice "
                     r"\(version [0-9a-f]{12}\) and agreed to the use of their data for ○九○ consumer and customer "
                     r"management and services and ○四○ marketing\. Details given: Name, Mobile phone, E-mail, and "
                     r"Birthday\.", page), page
    chinese = staff.get(f"/c/contacts/{contact_id}?lang=zh_Hant_TW").data.decode()
    assert "○九○ 消費者、客戶管理與服務和○四○ 行銷" in chinese and "姓名、手機號碼、電子郵件和生日" in chinese
    with app.app_context():  # in Taiwan's time: the record's UTC hour plus eight
        at = db.session.scalar(db.select(FormSubmission.at))
    from datetime import timedelta
    assert (at + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M") in chinese


def test_staff_send_the_form_again_with_a_new_link_once_per_press(app, line, friend, make_user):
    from wizard.models import Contact
    user_id, old_path = friend
    staff = app.test_client()
    email = make_user("staff@example.com", staff=True)
    assert staff.post("/login", data={"email": email, "password": "correct horse"}).status_code == 302
    with app.app_context():
        contact_id = db.session.scalar(db.select(Contact.id))
    page = staff.get(f"/c/contacts/{contact_id}?lang=en").data.decode()
    key = re.search(r'name="resend_key" type="hidden" value="([^"]+)"', page).group(1)
    for _ in range(2):  # pressed twice (a double tap): one message
        assert staff.post(f"/c/contacts/{contact_id}/send-form", data={"resend_key": key}).status_code == 302
    worker.process_pending(app)
    sent = line.control.sent_messages(line.id, user_id)
    assert [m["kind"] for m in sent] == ["reply", "push"]
    _url, new_path = link_in(sent[1]["message"]["text"])
    assert new_path != old_path and app.test_client().get(new_path).status_code == 200
    assert app.test_client().get(old_path).status_code == 410  # replaced by the new one


@pytest.mark.parametrize("where", ["collector", "shop name"])
def test_markup_in_the_collector_or_shop_name_shows_as_text_on_the_public_form(app, client, friend, where):
    """The marketing box's label names the collector (the shop's name unless the owner set one): a tag typed
    there is shown as the characters typed, never a link, a picture or a redirect on the customer's phone."""
    _user, path = friend
    injected = ('<a href="https://evil.example/">win</a><img src="https://evil.example/x.png">'
                '<meta http-equiv="refresh" content="0;url=https://evil.example/">')
    with app.app_context():
        shop = db.session.scalar(db.select(Shop))
        if where == "shop name":
            shop.name = injected
        else:
            settings, problems = form_settings.validate(shop, {"notice": {"collector": injected}})
            assert not problems
            form_settings.save(settings, "test")
        db.session.commit()
    html = client.get(path + "?lang=en").get_data(as_text=True)
    label = re.search(r'<label class="check">.*?</label>', html, re.S).group(0)
    assert "from &lt;a href=&#34;https://evil.example/&#34;&gt;win&lt;/a&gt;&lt;img" in label
    for tag in ('<a href="https://evil.example/', '<img src="https://evil.example', '<meta http-equiv="refresh"'):
        assert tag not in html


def test_the_notice_lists_in_the_customers_language_and_keeps_the_phone_as_the_shop_wrote_it(app, client, friend,
                                                                                             line):
    _user, path = friend
    configure(app, line.slug, notice={"contact_email": "privacy@sunny.example", "contact_phone": "(02) 2345-6789"})
    english = client.get(path + "?lang=en").get_data(as_text=True)
    notice_html = english[english.index('class="privacy-notice"'):english.index("</section>")]
    assert "、" not in notice_html  # Chinese list marks never show in English
    assert "Fields marked “required” (Name and Mobile phone)" in notice_html
    for way in ("send a message to 晴天烘焙坊 in this LINE chat", "write to privacy@sunny.example",
                "call (02) 2345-6789"):
        assert f"<dd>• {way}</dd>" in notice_html  # one way a line: nothing runs into the address or number
    chinese = client.get(path + "?lang=zh_Hant_TW").get_data(as_text=True)
    assert "<dd>• 寫信到 privacy@sunny.example</dd>" in chinese and "<dd>• 打電話到 (02) 2345-6789</dd>" in chinese
    assert "（姓名和手機號碼）" in chinese or "(姓名和手機號碼)" in chinese
