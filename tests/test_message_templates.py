"""Message templates (圖文訊息範本) as a send plan uses them: ``{name}`` filled per contact with LINE emoji kept
in place, personal templates told apart from those that can go to everyone at once, and the builder reading
back every message it wrote. The pages, pictures and API are in test_message_templates_pages.py and
test_message_templates_api.py."""
import pytest

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import Contact, MessageTemplate
from wizard.plans import cards, templates

GREETING = "{emoji:001} {name}您好！{name}，生日快樂 {emoji:002}"


def stored(app, slug, name, messages):
    """A template written as the builder saves it, read back from the database."""
    from wizard.models import Shop
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        db.session.add(MessageTemplate(shop_id=shop.id, name=name, messages=messages))
        db.session.commit()
        template = db.session.scalar(db.select(MessageTemplate).filter_by(name=name))
        db.session.expunge(template)
        return template


def contact(app, slug, **values):
    channel = make_channel(app, slug)
    with app.app_context():
        row = Contact(channel_id=channel["id"], line_user_id="U" + "0" * 32, **values)
        db.session.add(row)
        db.session.commit()
        db.session.refresh(row)
        db.session.expunge(row)
        return row


def test_name_is_filled_per_contact_and_line_emoji_stay_on_their_marks(app, make_shop):
    slug, _ = make_shop()
    template = stored(app, slug, "生日", [templates.text_message(GREETING), {"type": "text", "text": "No name"}])
    assert template.messages[0]["text"] == "$ {name}您好！{name}，生日快樂 $"
    mei = contact(app, slug, display_name="Mei", customer_name="林小美")
    first, second = templates.messages_for(template, mei)
    assert first["text"] == "$ 林小美您好！林小美，生日快樂 $"
    # Each emoji's index still points at its "$" after both names were filled in.
    assert [first["text"][e["index"]] for e in first["emojis"]] == ["$", "$"]
    assert [e["index"] for e in first["emojis"]] == [0, len(first["text"]) - 1]
    assert [e["emojiId"] for e in first["emojis"]] == ["001", "002"]
    assert second == {"type": "text", "text": "No name"}
    # The template itself is unchanged: the next contact gets their own name.
    assert template.messages[0]["text"] == "$ {name}您好！{name}，生日快樂 $"


def test_the_line_name_stands_in_when_the_form_was_not_filled(app, make_shop):
    slug, _ = make_shop()
    template = stored(app, slug, "問候", [templates.text_message("Hi {name}!")])
    with app.app_context():
        someone = Contact(display_name="Mei", customer_name=None)
        nobody = Contact(display_name=None, customer_name=None)
    assert templates.messages_for(template, someone)[0]["text"] == "Hi Mei!"
    assert templates.messages_for(template, nobody)[0]["text"] == "Hi !"


def test_a_personal_template_cannot_go_to_everyone_at_once(app, make_shop):
    slug, _ = make_shop()
    personal = stored(app, slug, "個人", [{"type": "text", "text": "{name}，新品上市"}])
    common = stored(app, slug, "共同", [{"type": "text", "text": "新品上市"},
                                        {"type": "flex", "altText": "新品",
                                         "contents": cards.bubble({"title": "新品", "buttons": []})}])
    assert templates.personal(personal) and not templates.personal(common)
    assert templates.messages_for_all(common) == common.messages
    with pytest.raises(templates.Personal):
        templates.messages_for_all(personal)


def test_the_builder_reads_back_every_message_it_wrote(app):
    card = {"image": "https://example.com/media/a.jpg", "title": "春季新品", "text": "全館九折",
            "buttons": [{"label": "看看", "kind": "uri", "value": "https://example.com/spring"},
                        {"label": "我要預約", "kind": "message", "value": "預約"}]}
    drafts = [
        {"kind": "text", "text": "{emoji:001} 價格 $100 {name}"},
        {"kind": "image", "url": "https://example.com/media/b.jpg", "preview": "https://example.com/media/c.jpg"},
        {"kind": "card", "card": card},
        {"kind": "carousel", "cards": [card, dict(cards.empty_card(), title="第二張")]},
    ]
    messages = templates.to_messages(drafts, "範本")
    # A "$" typed by the owner is text; only the emoji's "$" is an emoji.
    assert messages[0]["text"] == "$ 價格 $100 {name}" and messages[0]["emojis"] == [
        {"index": 0, "productId": templates.EMOJI_PRODUCT, "emojiId": "001"}]
    assert messages[2]["altText"] == "春季新品"
    footer = messages[2]["contents"]["footer"]["contents"]
    assert footer[0]["action"] == {"type": "uri", "label": "看看", "uri": "https://example.com/spring"}
    assert footer[1]["action"] == {"type": "message", "label": "我要預約", "text": "預約"}
    assert len(messages[3]["contents"]["contents"]) == 2
    with app.app_context():
        assert templates.drafts_of(messages) == [
            drafts[0], drafts[1], drafts[2],
            {"kind": "carousel", "cards": [card, {"image": "", "title": "第二張", "text": "", "buttons": []}]}]
    # A message the builder did not make is kept whole, never half-read.
    foreign = {"type": "sticker", "packageId": "446", "stickerId": "1988"}
    assert templates.drafts_of([foreign]) == [{"kind": "other", "message": foreign}]


def test_line_property_paths_point_at_the_field_the_owner_typed(app):
    card = {"image": "", "title": "", "text": "說明", "buttons": [{"label": "a", "kind": "uri", "value": "x"}]}
    drafts = [{"kind": "text", "text": "hi"}, {"kind": "carousel", "cards": [cards.empty_card(), card]}]
    where = lambda prop: templates.field_for_property(drafts, prop)  # noqa: E731
    assert where("messages[0].text") == "messages.0.text"
    assert where("messages[0].emojis[0].index") == "messages.0.text"
    # The card has no title: its body's first text is the card's text.
    assert where("messages[1].contents.contents[1].body.contents[0].text") == "messages.1.cards.1.text"
    assert where("messages[1].contents.contents[1].footer.contents[0].action.uri") == \
        "messages.1.cards.1.buttons.0.value"
    assert where("messages[1].contents.contents[1].footer.contents[0].action.label") == \
        "messages.1.cards.1.buttons.0.label"
    assert where("messages[1].contents.contents[0].hero.url") == "messages.1.cards.0.image"
    assert where("messages[1].altText") == "messages.1"
    assert where("messages[7].text") == "messages"


def test_emoji_positions_are_counted_as_line_counts_them(app, make_shop):
    """LINE counts an emoji's index in UTF-16 code units: an emoji typed on a phone (🎂) counts two."""
    slug, _ = make_shop()
    message = templates.text_message("🎂{name}{emoji:001}🎉{emoji:002}")
    assert message["text"] == "🎂{name}$🎉$" and [e["index"] for e in message["emojis"]] == [8, 11]
    assert templates.text_of(message) == "🎂{name}{emoji:001}🎉{emoji:002}"
    template = stored(app, slug, "生日", [message])
    with app.app_context():
        filled = templates.messages_for(template, Contact(customer_name="🌸小美"))[0]
    assert filled["text"] == "🎂🌸小美$🎉$"
    units = filled["text"].encode("utf-16-le")
    assert [units[2 * e["index"]:2 * e["index"] + 2].decode("utf-16-le") for e in filled["emojis"]] == ["$", "$"]
    assert [e["index"] for e in filled["emojis"]] == [6, 9]
