"""The customer data form a new friend reaches from the welcome message: /form/<token>, with the default
settings (name and mobile required, e-mail and birthday optional)."""
import re

import pytest

from tests.webhooks import make_channel
from wizard.customers import links
from wizard.extensions import db
from wizard.models import Channel, Contact


@pytest.fixture
def form_link(app, make_shop):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    with app.app_context():
        contact = Contact(channel_id=channel["id"], line_user_id="U" + "1" * 32, display_name="林小美")
        db.session.add(contact)
        db.session.flush()
        token = links.issue(contact, db.session.get(Channel, channel["id"]).shop_id)
        db.session.commit()
        return f"/form/{token}", contact.id


def stored(app, contact_id):
    with app.app_context():
        return db.session.get(Contact, contact_id)


def test_the_form_shows_the_shops_name_and_asks_for_the_details(client, form_link):
    page = client.get(form_link[0] + "?lang=en")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "晴天烘焙坊" in html
    for name in ("customer_name", "phone", "email", "birthday", "marketing"):
        assert f'name="{name}"' in html
    assert 'type="tel"' in html and 'type="date"' in html
    assert 'name="gender"' not in html and 'name="city"' not in html  # off by default
    assert 'value="林小美"' in html  # the name LINE gave, to confirm or correct
    assert 'name="marketing" type="checkbox" value="y"' in html and "checked" not in html


def test_valid_details_are_stored_and_thanked_for(app, client, form_link):
    path, contact_id = form_link
    response = client.post(path + "?lang=en", data={
        "customer_name": "  林小美 ", "phone": "0912-345 678", "email": "mei@example.com.tw",
        "birthday": "1990-05-31",
    })

    assert response.status_code == 302
    thanks = client.get(response.headers["Location"])
    assert "Thank you, 林小美!" in thanks.get_data(as_text=True)
    contact = stored(app, contact_id)
    assert (contact.customer_name, contact.phone, contact.email) == (
        "林小美", "0912345678", "mei@example.com.tw")
    assert contact.birthday.isoformat() == "1990-05-31"
    assert contact.form_filled_at is not None


def test_the_optional_fields_may_be_left_out_and_details_corrected_later(app, client, form_link):
    path, contact_id = form_link
    data = {"customer_name": "陳大文", "phone": "+886 912 345 678", "email": "", "birthday": ""}
    assert client.post(path, data=data).status_code == 302
    contact = stored(app, contact_id)
    assert (contact.phone, contact.email, contact.birthday) == ("0912345678", None, None)

    again = client.get(path + "?lang=en").get_data(as_text=True)
    assert "You can correct them here" in again and "Saved: 0912***678." in again and "Saved: 陳**." in again
    assert "0912345678" not in again and "陳大文" not in again  # shown only masked
    assert client.post(path, data=dict(data, phone="0987 654 321", email="wen@example.com")).status_code == 302
    assert (stored(app, contact_id).phone, stored(app, contact_id).email) == ("0987654321", "wen@example.com")


@pytest.mark.parametrize("field, value, message", [
    ("customer_name", "", "Enter your name."),
    ("customer_name", "名" * 101, "Use at most 100 characters."),
    ("customer_name", "林\x00小美", "Enter your name without control characters."),
    ("phone", "", "Enter your mobile number."),
    ("phone", "0912", "Enter a Taiwanese mobile number: 09 and 8 more digits"),
    ("phone", "call me maybe", "Enter a Taiwanese mobile number"),
    ("phone", "02 2345 6789", "Enter a Taiwanese mobile number"),  # a landline
    ("phone", "09123456789", "Enter a Taiwanese mobile number"),  # one digit too many
    ("phone", "+1 912 345 678", "Enter a Taiwanese mobile number"),
    ("phone", "٠٩١٢٣٤٥٦٧٨", "Enter a Taiwanese mobile number"),  # digits, but not ones a CRM dials
    ("email", "mei at example", "Enter an e-mail address like name@example.com."),
    ("email", "mei@example", "Enter an e-mail address like name@example.com."),
    ("birthday", "31/05/1990", "Enter the birthday as a date, for example 1990-05-31."),
    ("birthday", "2999-01-01", "Enter a birthday between 1900 and today."),
    ("birthday", "1899-12-31", "Enter a birthday between 1900 and today."),
])
def test_bad_input_is_refused_with_a_clear_message_and_kept_on_the_page(app, client, form_link, field, value,
                                                                          message):
    path, contact_id = form_link
    data = {"customer_name": "林小美", "phone": "0912345678", "email": "mei@example.com", "birthday": ""}
    data[field] = value

    response = client.post(path + "?lang=en", data=data)

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert message in html
    assert 'class="error-summary"' in html and f'href="#{field}"' in html
    assert f'id="{field}-error"' in html and 'aria-invalid="true"' in html
    assert "Not a valid" not in html  # wtforms' own untranslated words never show
    # What was typed is not lost: the other fields keep theirs, and a wrong e-mail stays to be corrected.
    assert f'value="{value if field == "email" else "mei@example.com"}"' in html
    assert stored(app, contact_id).form_filled_at is None


def test_an_unknown_link_says_so(client, form_link):
    for path in ("/form/not-a-real-token", "/form/" + "x" * 400, "/form/nope/thanks", "/form/é"):
        response = client.get(path + "?lang=en")
        assert response.status_code == 404
        assert "This link does not work" in response.get_data(as_text=True)


@pytest.mark.parametrize("typed", [
    "０９１２３４５６７８",  # full-width digits, as a Chinese input method gives them
    "０９１２－３４５－６７８",  # full-width hyphen-minus
    "０９１２　３４５　６７８",  # ideographic spaces
    "0912—345—678",  # em dash
    "0912–345–678",  # en dash
    "（０９１２）３４５‐６７８",  # full-width brackets, Unicode hyphen
])
def test_a_phone_number_typed_full_width_or_with_other_dashes_is_stored_plain(app, client, form_link, typed):
    path, contact_id = form_link
    response = client.post(path, data={"customer_name": "林小美", "phone": typed, "email": "mei@example.com"})

    assert response.status_code == 302
    assert stored(app, contact_id).phone == "0912345678"


@pytest.mark.parametrize("typed", ["＋８８６ ９１２ ３４５ ６７８", "+886-912-345-678", "886912345678",
                                   "+886 0912 345 678"])
def test_a_number_typed_with_taiwans_country_code_is_stored_as_dialled_at_home(app, client, form_link, typed):
    path, contact_id = form_link
    data = {"customer_name": "林小美", "phone": typed, "email": "mei@example.com"}

    assert client.post(path, data=data).status_code == 302
    assert stored(app, contact_id).phone == "0912345678"


@pytest.mark.parametrize("typed", [
    "mei＠example.com",
    "ｍｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    " Mei@Example。com ",  # an ideographic full stop for the dot
])
def test_an_e_mail_typed_full_width_is_accepted_and_stored_plain(app, client, form_link, typed):
    path, contact_id = form_link
    response = client.post(path, data={"customer_name": "林小美", "phone": "0912345678", "email": typed})

    assert response.status_code == 302
    assert stored(app, contact_id).email == "mei@example.com"


def test_saved_details_are_shown_masked_and_a_field_left_empty_keeps_its_value(app, client, form_link):
    path, contact_id = form_link
    assert client.post(path, data={"customer_name": "林小美", "phone": "0912345678", "email": "mei@example.com",
                                   "birthday": "1990-05-31", "marketing": "y"}).status_code == 302
    page = client.get(path + "?lang=en")
    html = page.get_data(as_text=True)
    for masked in ("Saved: 林**.", "Saved: 0912***678.", "Saved: m***@example.com.", "Saved: 1990-**-**."):
        assert masked in html
    for plain in ("林小美", "0912345678", "mei@example.com", "1990-05-31", "05-31"):
        assert plain not in html, plain
    assert re.search(r"<input [^>]*checked[^>]*name=\"marketing\"", html)  # the box they ticked stays ticked
    # A correction types only what changes: the empty fields keep what was saved.
    assert client.post(path, data={"customer_name": "", "phone": "", "email": "wen@example.com", "birthday": "",
                                   "marketing": "y"}).status_code == 302
    contact = stored(app, contact_id)
    assert (contact.customer_name, contact.phone, contact.email, contact.birthday.isoformat()) == (
        "林小美", "0912345678", "wen@example.com", "1990-05-31")
    # A mistake in a changed field is shown, and the kept ones are not echoed back in plain.
    wrong = client.post(path + "?lang=en", data={"customer_name": "", "phone": "12", "email": ""})
    html = wrong.get_data(as_text=True)
    assert wrong.status_code == 200 and "Enter a Taiwanese mobile number" in html
    assert "林小美" not in html and "wen@example.com" not in html


def test_the_page_is_never_cached(client, form_link):
    path, _contact_id = form_link
    answers = [client.get(path), client.post(path, data={"customer_name": "", "phone": ""}),
               client.post(path, data={"customer_name": "林小美", "phone": "0912345678"})]
    answers += [client.get(answers[-1].headers["Location"]), client.get("/form/not-a-link")]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store", answer.status_code


def test_submissions_are_throttled_per_link_with_a_clear_message(app, client, form_link):
    from wizard.models import FormSubmission
    path, contact_id = form_link
    data = {"customer_name": "林小美", "phone": "0912345678"}
    allowed = int(app.config["FORM_SUBMIT_LIMIT"].split()[0])
    for _ in range(allowed):
        assert client.post(path, data=data).status_code == 302
    refused = client.post(path + "?lang=en", data=dict(data, customer_name="攻擊者"))
    html = refused.get_data(as_text=True)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "This form was sent many times in a short while. Nothing was saved this time" in html
    assert refused.headers["Cache-Control"] == "no-store"
    assert stored(app, contact_id).customer_name == "林小美"
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(FormSubmission.id))) == allowed
    assert client.get(path).status_code == 200  # reading the page is not throttled


def test_the_thanks_page_names_the_customer_only_to_the_browser_that_just_submitted(app, client, form_link):
    path, _contact_id = form_link
    done = client.post(path + "?lang=en", data={"customer_name": "林小美", "phone": "0912345678"})
    assert "Thank you, 林小美!" in client.get(done.headers["Location"]).get_data(as_text=True)
    for reader in (client, app.test_client()):  # later, or anyone else holding the link
        html = reader.get(path + "/thanks?lang=en").get_data(as_text=True)
        assert "Thank you!" in html and "林小美" not in html
