"""The template builder's pages (/c/<slug>/templates) as an owner and staff use them: without JavaScript every
button works by posting the form back, a picture is uploaded, resized for LINE and served publicly, the
preview is drawn by the server, our checks and LINE's stand next to the field they are about, and nothing is
saved until LINE accepts the template. Another shop's owner sees nothing."""
import io
import re

import pytest
from PIL import Image

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import AuditEntry, MessageTemplate

OWNER = "owner-sunny-bakery@example.com"


def picture(size=(3000, 1500), kind="PNG", mode="RGBA", colour=(200, 30, 30, 0)):
    data = io.BytesIO()
    Image.new(mode, size, colour).save(data, kind)
    data.seek(0)
    return data


def page(response):
    return response.get_data(as_text=True)


def saved(app):
    with app.app_context():
        rows = db.session.scalars(db.select(MessageTemplate).order_by(MessageTemplate.id)).all()
        db.session.expunge_all()
        return rows


def field_error(html, field_id):
    """The error shown next to the field ``field_id`` (its aria-describedby target), or None."""
    found = re.search(r'<p class="field-error" id="%s-error">(.*?)</p>' % re.escape(field_id), html, re.S)
    return found.group(1).strip() if found else None


def post(client, slug, data, path="new"):
    return client.post(f"/c/{slug}/templates/{path}", data=data, content_type="multipart/form-data")


def test_the_builder_works_without_javascript(app, client, owner):
    html = page(client.get(f"/c/{owner}/templates/new"))
    assert 'name="messages-0-kind" value="text"' in html and "Message 1 of 1: Text" in html
    form = {"name": "春季", "messages-0-kind": "text", "messages-0-text": "你好", "action": "add-card"}
    html = page(post(client, owner, form))
    assert "Message 2 of 2: Card" in html and 'id="messages-1-cards-0-title"' in html
    # What was typed is kept through the round trip.
    assert ">你好</textarea>" in html
    form.update({"messages-1-kind": "card", "messages-1-cards-0-title": "新品", "action": "up-1"})
    html = page(post(client, owner, form))
    assert html.index("Message 1 of 2: Card") < html.index("Message 2 of 2: Text")
    # The emoji and {name} buttons append their mark to the text when no script inserts it at the cursor.
    html = page(post(client, owner, dict(form, action="emoji-0-007")))
    assert ">你好{emoji:007}</textarea>" in html
    html = page(post(client, owner, dict(form, action="name-0")))
    assert ">你好{name}</textarea>" in html
    html = page(post(client, owner, dict(form, action="remove-0")))
    assert "Message 1 of 1: Card" in html and "你好" not in html
    # A carousel starts with two cards and takes up to ten.
    html = page(post(client, owner, {"name": "c", "messages-0-kind": "carousel", "action": "more-card-0",
                                     **{f"messages-0-cards-{c}-title": f"卡{c}" for c in range(9)}}))
    assert html.count('class="lt-card"') == 10 and "Add a card" not in html
    assert saved(app) == []  # nothing but "save" saves


def test_the_preview_is_drawn_by_the_server_as_line_shows_it(client, owner):
    html = page(post(client, owner, {
        "name": "生日", "messages-0-kind": "text", "messages-0-text": "{emoji:001}{name} <b>生日快樂</b>",
        "messages-1-kind": "card", "messages-1-cards-0-title": "壽星優惠", "messages-1-cards-0-text": "九折",
        "messages-1-cards-0-buttons-0-label": "預約", "messages-1-cards-0-buttons-0-kind": "message",
        "messages-1-cards-0-buttons-0-value": "我要預約", "action": "preview"}))
    shown = html[html.index('id="preview"'):]
    assert "/sticon/5ac1bfd5040ab15980c9b435/iPhone/001.png" in shown
    assert '<span class="lt-name">Wang Xiaoming</span>' in shown
    assert "&lt;b&gt;生日快樂&lt;/b&gt;" in shown  # the owner's text is text, never markup
    assert '<p class="lt-flex-title" data-shows="messages-1-cards-0-title">壽星優惠</p>' in shown
    assert '<p class="lt-flex-button" data-shows="messages-1-cards-0-buttons-0-label">預約</p>' in shown
    assert '<p class="lt-flex-button" data-shows="messages-1-cards-0-buttons-1-label" hidden></p>' in shown


def test_a_picture_is_resized_for_line_and_served_publicly(app, client, owner):
    response = post(client, owner, {"name": "圖", "messages-0-kind": "image",
                                    "messages-0-image": (picture(), "big.png"), "action": "preview"})
    html = page(response)
    url = re.search(r'name="messages-0-url" value="([^"]+)"', html).group(1)
    base = app.config["PUBLIC_BASE_URL"]
    assert re.fullmatch(re.escape(base) + r"/media/[A-Za-z0-9_-]{32}\.jpg", url)
    name = url.rsplit("/", 1)[1]
    client.post("/logout")  # LINE fetches it without signing in
    original = client.get(f"/media/{name}")
    assert original.status_code == 200 and original.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(original.data)) as shown:
        assert shown.format == "JPEG" and shown.size == (2048, 1024)
        # The transparent PNG is laid on white, as LINE's chat shows it.
        assert shown.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=3)
    preview = client.get(f"/media/{name[:-4]}-preview.jpg")
    with Image.open(io.BytesIO(preview.data)) as small:
        assert small.size == (240, 120) and len(preview.data) < 1024 * 1024
    assert client.get("/media/" + "A" * 32 + ".jpg").status_code == 404
    assert client.get("/media/..%2Finstance%2Fsecret_key").status_code == 404


@pytest.mark.parametrize("content, words", [
    (b"GIF89a" + b"\0" * 100, "not a picture that can be read"),
    (b"", "Choose a picture"),
])
def test_a_file_that_is_not_a_jpeg_or_png_is_refused_next_to_its_field(client, owner, content, words):
    html = page(post(client, owner, {"name": "圖", "messages-0-kind": "image",
                                     "messages-0-image": (io.BytesIO(content), "x.png"), "action": "preview"}))
    assert words in (field_error(html, "messages-0-image") or "")
    assert 'name="messages-0-url" value=""' in html


def test_a_gif_picture_is_refused_by_name(client, owner):
    html = page(post(client, owner, {"name": "圖", "messages-0-kind": "image",
                                     "messages-0-image": (picture(kind="GIF", mode="P", colour=1), "a.gif"),
                                     "action": "preview"}))
    assert "LINE takes JPEG and PNG pictures only; this file is GIF." == field_error(html, "messages-0-image")


def test_our_checks_stand_next_to_their_fields_and_nothing_is_saved(app, client, owner):
    make_channel(app, owner)
    response = post(client, owner, {
        "name": " ", "messages-0-kind": "text", "messages-0-text": " ",
        "messages-1-kind": "card", "messages-1-cards-0-title": "{name}的優惠",
        "messages-1-cards-0-buttons-0-label": "", "messages-1-cards-0-buttons-0-kind": "uri",
        "messages-1-cards-0-buttons-0-value": "example.com",
        "messages-1-cards-0-buttons-1-label": "一二三四五六七八九十" * 4 + "一",
        "messages-1-cards-0-buttons-1-kind": "message",
        "messages-1-cards-0-buttons-1-value": "好", "action": "save"})
    html = page(response)
    assert response.status_code == 400 and "Nothing was saved." in html
    assert field_error(html, "name") == "Give the template a name."
    assert field_error(html, "messages-0-text") == "Type the message&#39;s text."
    assert field_error(html, "messages-1-cards-0-title") == "{name} can only be used in a text message, not in a card."
    assert field_error(html, "messages-1-cards-0-buttons-0-label") == \
        "Give the button a label (what the customer taps)."
    assert "starting with https://" in field_error(html, "messages-1-cards-0-buttons-0-value")
    assert "at most 40 characters" in field_error(html, "messages-1-cards-0-buttons-1-label")
    # The summary links to each field.
    assert '<a href="#messages-1-cards-0-buttons-0-value">' in html
    assert saved(app) == []


def test_a_picture_address_typed_into_the_form_is_not_sent_to_line(app, client, owner):
    make_channel(app, owner)
    html = page(post(client, owner, {"name": "圖", "messages-0-kind": "image",
                                     "messages-0-url": "https://evil.example/x.jpg", "action": "save"}))
    assert field_error(html, "messages-0-image") == "Upload the picture again here."
    assert saved(app) == []


def test_without_a_connected_line_account_nothing_is_saved(app, client, owner):
    response = post(client, owner, {"name": "問候", "messages-0-kind": "text", "messages-0-text": "你好",
                                    "action": "save"})
    html = page(response)
    assert response.status_code == 400
    assert "Connect the shop&#39;s LINE account first" in html
    assert "The shop's LINE account is not connected yet" in html
    assert saved(app) == []


def test_pages_speak_chinese_by_default(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    html = page(client.get(f"/c/{slug}/templates/new"))
    assert "圖文訊息範本" in html and "新增訊息" in html and "預覽" in html


def test_another_shops_owner_sees_nothing(app, client, owner, make_shop, login):
    with app.app_context():
        from wizard.models import Shop
        shop_id = db.session.scalar(db.select(Shop.id).filter_by(slug=owner))
        db.session.add(MessageTemplate(shop_id=shop_id, name="秘密", messages=[{"type": "text", "text": "秘密"}]))
        db.session.commit()
        template_id = db.session.scalar(db.select(MessageTemplate.id))
    other, other_owner = make_shop("calm-tea", "平靜茶坊")
    client.post("/logout")
    assert client.get(f"/c/{owner}/templates").status_code == 302  # to the sign-in page
    login(other_owner)
    for path in (f"/c/{owner}/templates", f"/c/{owner}/templates/new", f"/c/{owner}/templates/{template_id}/edit",
                 f"/c/{owner}/templates/{template_id}/delete", f"/c/{other}/templates/{template_id}/edit",
                 f"/c/{other}/templates/{template_id}/delete"):
        response = client.get(path)
        assert response.status_code == 404 and "秘密" not in page(response), path
    assert client.post(f"/c/{other}/templates/{template_id}/delete").status_code == 404
    assert client.post(f"/c/{owner}/templates/new", data={"name": "x", "action": "save"}).status_code == 404
    assert len(saved(app)) == 1
    assert "秘密" not in page(client.get(f"/c/{other}/templates"))


def test_deleting_asks_first_and_is_recorded(app, client, make_shop, staff):
    from wizard.models import Shop
    make_shop()
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug="sunny-bakery"))
        db.session.add(MessageTemplate(shop_id=shop.id, name="舊的", messages=[{"type": "text", "text": "x"}]))
        db.session.commit()
        template_id = db.session.scalar(db.select(MessageTemplate.id))
    html = page(client.get(f"/c/sunny-bakery/templates/{template_id}/delete"))
    assert "Delete the template “舊的”?" in html and "Acting for 晴天烘焙坊 as staff" in html
    assert len(saved(app)) == 1
    response = client.post(f"/c/sunny-bakery/templates/{template_id}/delete")
    assert response.status_code == 302 and saved(app) == []
    assert "The template “舊的” was deleted." in page(client.get("/c/sunny-bakery/templates"))
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="message_template.deleted"))
        assert entry.actor == "staff@example.com" and entry.target == "舊的"


@pytest.fixture
def connected(line, client, login):
    """The owner of a shop connected to a sandbox channel, signed in, pages in English; returns the slug."""
    login(OWNER)
    client.get("/?lang=en")
    return line.slug


def card_form(**more):
    form = {"name": "春季新品", "messages-0-kind": "card",
            "messages-0-cards-0-image": (picture(size=(1600, 1040), kind="JPEG", mode="RGB", colour=(0, 120, 0)),
                                         "spring.jpg"),
            "messages-0-cards-0-title": "春季新品", "messages-0-cards-0-text": "全館九折",
            "messages-0-cards-0-buttons-0-label": "看看", "messages-0-cards-0-buttons-0-kind": "uri",
            "messages-0-cards-0-buttons-0-value": "https://example.com/spring",
            "messages-1-kind": "text", "messages-1-text": "🌸{name}，{emoji:001}歡迎光臨", "action": "save"}
    form.update(more)
    return form


def test_a_card_with_an_uploaded_picture_and_a_button_is_checked_by_line_and_saved(app, client, connected):
    response = post(client, connected, card_form())
    assert response.status_code == 302, field_error(page(response), "messages-0-cards-0-image") or page(response)
    assert "The template “春季新品” was checked by LINE and saved." in page(client.get(response.location))
    [template] = saved(app)
    card, text = template.messages
    bubble = card["contents"]
    assert card["type"] == "flex" and card["altText"] == "春季新品"
    hero = bubble["hero"]["url"]
    assert hero.startswith(app.config["PUBLIC_BASE_URL"] + "/media/")
    assert client.get(hero[len(app.config["PUBLIC_BASE_URL"]):]).status_code == 200
    assert [t["text"] for t in bubble["body"]["contents"]] == ["春季新品", "全館九折"]
    assert bubble["footer"]["contents"][0]["action"] == {"type": "uri", "label": "看看",
                                                         "uri": "https://example.com/spring"}
    # LINE counts the emoji's index in UTF-16 code units: the 🌸 before it counts two.
    assert text == {"type": "text", "text": "🌸{name}，$歡迎光臨",
                    "emojis": [{"index": 9, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}]}
    # The edit page gives the owner the form back, never the JSON.
    html = page(client.get(f"/c/{connected}/templates/{template.id}/edit"))
    assert 'value="春季新品"' in html and ">🌸{name}，{emoji:001}歡迎光臨</textarea>" in html
    assert 'name="messages-0-cards-0-buttons-0-value" value="https://example.com/spring"' in html
    assert '"type": "bubble"' not in html and "&#34;bubble&#34;" not in html


def test_lines_refusal_is_explained_next_to_the_field_and_nothing_is_saved(app, client, connected):
    # A deployment whose public address is plain http: LINE fetches pictures over https only.
    app.config["PUBLIC_BASE_URL"] = "http://shop.example"
    response = post(client, connected, card_form())
    html = page(response)
    assert response.status_code == 400 and "Nothing was saved." in html
    assert field_error(html, "messages-0-cards-0-image") == \
        "LINE does not accept this web address (it must start with https://)."
    assert field_error(html, "messages-1-text") is None
    assert saved(app) == []
    # In Chinese, the owner's language.
    client.get("/?lang=zh_Hant_TW")
    html = page(post(client, connected, card_form()))
    assert field_error(html, "messages-0-cards-0-image") == "LINE 不接受這個網址（必須以 https:// 開頭）。"
    assert saved(app) == []


def test_staff_act_for_the_shop_and_their_saves_are_recorded(app, client, line, make_user, login):
    login(make_user("staff@example.com", staff=True))
    client.get("/?lang=en")
    html = page(client.get(f"/c/{line.slug}/templates/new"))
    assert "Acting for 晴天烘焙坊 as staff (staff@example.com)" in html
    response = post(client, line.slug, {"name": "問候", "messages-0-kind": "text", "messages-0-text": "你好",
                                        "action": "save"})
    assert response.status_code == 302
    [template] = saved(app)
    response = post(client, line.slug, {"name": "問候語", "messages-0-kind": "text", "messages-0-text": "您好",
                                        "action": "save"}, path=f"{template.id}/edit")
    assert response.status_code == 302 and [t.name for t in saved(app)] == ["問候語"]
    with app.app_context():
        entries = db.session.scalars(db.select(AuditEntry).filter(AuditEntry.action.like("message_template.%"))
                                     .order_by(AuditEntry.id)).all()
        assert [(e.action, e.actor, e.target) for e in entries] == [
            ("message_template.created", "staff@example.com", "問候"),
            ("message_template.saved", "staff@example.com", "問候語")]


def test_a_taken_name_is_refused_next_to_the_name(app, client, connected):
    form = {"name": "問候", "messages-0-kind": "text", "messages-0-text": "你好", "action": "save"}
    assert post(client, connected, form).status_code == 302
    html = page(post(client, connected, dict(form, **{"messages-0-text": "再一次"})))
    assert field_error(html, "name") == "Another template of this shop is called “問候”."
    assert [t.messages for t in saved(app)] == [[{"type": "text", "text": "你好"}]]


def test_when_line_cannot_be_reached_nothing_is_saved(app, client, owner):
    make_channel(app, owner)  # this app's LINE is a port where nothing listens
    html = page(post(client, owner, {"name": "問候", "messages-0-kind": "text", "messages-0-text": "你好",
                                     "action": "save"}))
    assert "LINE could not be reached to check the template; nothing was saved." in html
    assert saved(app) == []
