"""A contact's conversation against the LINE sandbox over real HTTP: every kind of message a LINE user sends
is stored and shown, media content is fetched once through the queue and served only to people who may see
the contact, opening the page marks the messages read on LINE once, and typed replies go out by reply token
while it is fresh (free) or by push, through the outbox, exactly once, with the month's quota shown."""
import re
import uuid

import pytest

from wizard import jobs, queue
from wizard.customers import content, replies
from wizard.extensions import db
from wizard.line import worker
from wizard.models import Contact, Message, MessageContent, Outbox, utcnow

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
       b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def run_queue(app):
    """Run what the queue holds now (tasks the pages and the worker enqueued), as a consumer would; returns
    their names, leaving out the receiver's doorbell (``drain_events``)."""
    huey = queue.instance(app)
    ran = []
    while True:
        task = huey.dequeue()
        if task is None:
            return ran
        if task.name != "drain_events":
            ran.append(task.name)
        huey.execute(task)


@pytest.fixture
def friend(app, line, client, login):
    """A friend of the shop (its owner signed in, pages in English); returns (user id, contact id)."""
    login(f"owner-{line.slug}@example.com")
    client.get("/?lang=en")
    user_id = line.follow(name="林小美")
    worker.process_pending(app)
    contact = line.contact(user_id)
    return user_id, contact.id


def page_of(client, contact_id):
    response = client.get(f"/c/contacts/{contact_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def test_every_kind_of_message_is_stored_and_shown(app, client, line, friend):
    user_id, contact_id = friend
    control = line.control
    control.send(line.id, user_id, "text", text="請問 <b>明天</b> 有開嗎？")
    control.send(line.id, user_id, "sticker", packageId="446", stickerId="1988", keywords=["Happy"])
    control.send(line.id, user_id, "image", content=PNG, content_type="image/png")
    control.send(line.id, user_id, "file", fileName="訂單 =1+1.pdf", content=b"%PDF-1.4 tiny",
                 content_type="application/pdf")
    control.send(line.id, user_id, "location", title="晴天烘焙坊", address="台北市大安區忠孝東路四段 1 號",
                 latitude=25.041629, longitude=121.543767)
    control.send(line.id, user_id, "audio", duration=2500)
    worker.process_pending(app)
    with app.app_context():
        stored = db.session.scalars(db.select(Message).filter_by(direction="in").order_by(Message.id)).all()
        assert [m.type for m in stored] == ["text", "sticker", "image", "file", "location", "audio"]
        sticker, image, file, location, audio = stored[1:]
        assert sticker.detail == {"packageId": "446", "stickerId": "1988", "resourceType": "STATIC",
                                  "keywords": ["Happy"]}
        assert file.detail == {"fileName": "訂單 =1+1.pdf", "fileSize": 13}
        assert location.detail["latitude"] == 25.041629 and location.detail["title"] == "晴天烘焙坊"
        assert audio.detail == {"duration": 2500}
        assert all(m.mark_as_read_token and m.reply_token for m in stored)  # the sandbox's Chat is on
        pending = db.session.scalars(db.select(MessageContent).order_by(MessageContent.id)).all()
        assert [(c.message_id, c.status) for c in pending] == [(m.id, "pending") for m in (image, file, audio)]
        image_id, file_id = image.id, file.id
    html = page_of(client, contact_id)
    assert "請問 &lt;b&gt;明天&lt;/b&gt; 有開嗎？" in html  # escaped, never markup
    assert "being fetched from LINE" in html

    with app.app_context():
        assert content.fetch_due() == 3
        assert content.fetch_due() == 0  # kept: never fetched twice
        kept = {c.message_id: c for c in db.session.scalars(db.select(MessageContent))}
        assert kept[image_id].status == "ready" and kept[image_id].content_type == "image/png"
        assert kept[image_id].size == len(PNG)
    html = page_of(client, contact_id)
    assert f'src="/c/contacts/{contact_id}/messages/{image_id}/content"' in html
    assert "stickershop.line-scdn.net/stickershop/v1/sticker/1988/android/sticker.png" in html
    assert "https://www.google.com/maps/search/?api=1&amp;query=25.041629,121.543767" in html
    assert "台北市大安區忠孝東路四段 1 號" in html and "訂單 =1+1.pdf" in html

    picture = client.get(f"/c/contacts/{contact_id}/messages/{image_id}/content")
    assert picture.status_code == 200 and picture.data == PNG
    assert picture.headers["Content-Type"] == "image/png"
    assert picture.headers["Content-Disposition"].startswith("inline")
    assert "sandbox" in picture.headers["Content-Security-Policy"]
    assert picture.headers["X-Content-Type-Options"] == "nosniff"
    document = client.get(f"/c/contacts/{contact_id}/messages/{file_id}/content")
    assert document.status_code == 200 and document.data == b"%PDF-1.4 tiny"
    assert document.headers["Content-Type"] == "application/pdf"
    disposition = document.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and "filename*=UTF-8''%E8%A8%82%E5%96%AE" in disposition


def test_content_is_shown_to_nobody_else(app, client, line, friend, make_shop, make_user, login):
    user_id, contact_id = friend
    line.control.send(line.id, user_id, "image", content=PNG, content_type="image/png")
    worker.process_pending(app)
    with app.app_context():
        content.fetch_due()
        message_id = db.session.scalar(db.select(Message.id).filter_by(type="image"))
    url = f"/c/contacts/{contact_id}/messages/{message_id}/content"
    assert client.get(url).status_code == 200
    _slug, other_owner = make_shop("calm-tea", "平靜茶坊")
    client.post("/logout")
    login(other_owner)
    for path in (url, f"/c/contacts/{contact_id}", f"/c/{line.slug}/contacts", f"/c/{line.slug}/contacts.csv"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert PNG not in response.data and "林小美" not in response.get_data(as_text=True)
    assert client.post(f"/c/contacts/{contact_id}/reply", data={"text": "hi", "key": str(uuid.uuid4())}
                       ).status_code == 404
    assert client.post(f"/c/contacts/{contact_id}/send-form",
                       data={"resend_key": str(uuid.uuid4())}).status_code == 404
    with app.app_context():
        from wizard.models import Outbox
        assert db.session.scalars(db.select(Outbox.purpose)).all() == ["form"]  # the follow's own, nothing more
    client.post("/logout")
    login(make_user(staff=True))
    assert client.get(url).status_code == 200  # staff see every shop's
    client.post("/logout")
    assert client.get(url).status_code == 302  # signed out: to the sign-in page


def test_video_content_waits_until_line_has_prepared_it(app, line, friend):
    user_id, _contact_id = friend
    sent = line.control.send(line.id, user_id, "video", ready=False)
    worker.process_pending(app)
    with app.app_context():
        [row_id] = db.session.scalars(db.select(MessageContent.id)).all()
        outcome, delay = content.fetch(row_id)
        assert outcome == content.Outcome.RETRY and delay == content.DELAYS[0]
        assert content.due_ids() == []  # waits its delay
    line.control.finish_transcoding(line.id, sent["event"]["message"]["id"])
    line.make_due()
    with app.app_context():
        db.session.execute(db.update(MessageContent).values(next_attempt_at=utcnow()))
        db.session.commit()
        assert content.fetch(row_id)[0] == content.Outcome.READY
        kept = db.session.get(MessageContent, row_id)
        assert kept.status == "ready" and kept.attempts == 2 and kept.data


def test_content_over_the_cap_is_not_kept(app, line, friend):
    app.config["LINE_CONTENT_MAX_BYTES"] = 100
    user_id, _contact_id = friend
    line.control.send(line.id, user_id, "image", content=b"x" * 500, content_type="image/jpeg")
    line.control.send(line.id, user_id, "file", fileName="big.zip", content=b"y" * 200)
    worker.process_pending(app)
    with app.app_context():
        content.fetch_due()
        rows = db.session.scalars(db.select(MessageContent).order_by(MessageContent.id)).all()
        assert [(r.status, r.data) for r in rows] == [("too_large", None), ("too_large", None)]
        assert rows[1].attempts == 0  # the file said its size: LINE was not even asked


def test_the_content_task_is_queued_by_the_event_and_retried_through_the_queue(app, line, friend):
    user_id, _contact_id = friend
    line.control.send(line.id, user_id, "image", content=PNG, content_type="image/png")
    with app.app_context():
        worker.drain(after_commit=jobs.enqueue_effects)
    ran = run_queue(app)
    assert "fetch_content" in ran
    with app.app_context():
        assert db.session.scalar(db.select(MessageContent.status)) == "ready"


def test_opening_the_conversation_marks_it_read_once(app, client, line, friend):
    user_id, contact_id = friend
    line.control.say(line.id, user_id, "one")
    line.control.say(line.id, user_id, "two")
    worker.process_pending(app)
    run_queue(app)  # whatever the follow left
    page_of(client, contact_id)
    assert run_queue(app) == ["mark_read"]
    marks = line.control.read_marks(line.id, user_id)
    assert len(marks) == 2  # LINE reads the earlier message with the newest
    page_of(client, contact_id)
    assert run_queue(app) == []  # the same token is never sent twice
    line.control.say(line.id, user_id, "three")
    worker.process_pending(app)
    page_of(client, contact_id)
    assert run_queue(app) == ["mark_read"]
    assert len(line.control.read_marks(line.id, user_id)) == 3


def test_no_read_mark_with_chat_off_and_a_failing_line_never_breaks_the_page(app, client, line, friend):
    user_id, contact_id = friend
    line.control.update(line.id, chat_mode="bot")
    line.control.say(line.id, user_id, "bot mode")
    worker.process_pending(app)
    page_of(client, contact_id)
    assert run_queue(app) == []  # no markAsReadToken without Chat
    line.control.update(line.id, chat_mode="chat")
    line.control.say(line.id, user_id, "chat mode")
    worker.process_pending(app)
    line.control.fail(line.id, 500)
    page_of(client, contact_id)  # LINE down: the quota says so, the page still answers
    run_queue(app)
    line.control.heal(line.id)
    assert line.control.read_marks(line.id, user_id) == []


def reply_key(html):
    return re.search(r'name="key" type="hidden" value="([^"]+)"', html).group(1)


def test_a_reply_within_the_minute_goes_free_by_reply_token(app, client, line, friend):
    user_id, contact_id = friend
    line.control.say(line.id, user_id, "有草莓蛋糕嗎？")
    worker.process_pending(app)
    html = page_of(client, contact_id)
    assert 'data-method="reply"' in html
    response = client.post(f"/c/contacts/{contact_id}/reply", data={"text": "有的，今天還有三個。",
                                                                     "key": reply_key(html)})
    assert response.status_code == 302
    html = page_of(client, contact_id)
    assert 'data-status="queued"' in html and "Sending…" in html  # at once, before LINE is asked
    with app.app_context():
        from wizard.outgoing import outbox
        outbox.send_due()
    sent = [m for m in line.control.sent_messages(line.id, user_id) if m["message"]["text"] == "有的，今天還有三個。"]
    assert [m["kind"] for m in sent] == ["reply"]
    html = page_of(client, contact_id)
    assert 'data-status="sent"' in html and "by reply" in html
    assert 'data-method="push"' in html  # the token is used: the next one would be a push


def test_pressing_send_twice_sends_once(app, client, line, friend):
    user_id, contact_id = friend
    key = reply_key(page_of(client, contact_id))
    for _ in range(2):
        client.post(f"/c/contacts/{contact_id}/reply", data={"text": "謝謝你！", "key": key})
    with app.app_context():
        rows = db.session.scalars(db.select(Outbox).filter_by(purpose="typed")).all()
        assert len(rows) == 1 and rows[0].method == "push" and rows[0].retry_key == key
        from wizard.outgoing import outbox
        outbox.send_due()
    pushes = [m for m in line.control.sent_messages(line.id, user_id) if m["message"].get("text") == "謝謝你！"]
    assert len(pushes) == 1 and pushes[0]["kind"] == "push" and pushes[0]["retryKey"] == key


def test_an_old_reply_token_means_push(app, client, line, friend):
    user_id, contact_id = friend
    line.control.say(line.id, user_id, "hello")
    worker.process_pending(app)
    with app.app_context():
        db.session.execute(db.update(Message).values(sent_at=utcnow() - replies._token_lifetime()))
        db.session.commit()
        contact = db.session.get(Contact, contact_id)
        assert replies.plan(contact).method == "push"


def test_bad_text_is_refused_and_kept_in_the_box(app, client, line, friend):
    _user_id, contact_id = friend
    key = reply_key(page_of(client, contact_id))
    response = client.post(f"/c/contacts/{contact_id}/reply", data={"text": "   ", "key": key})
    assert response.status_code == 400 and "Type a message first." in response.get_data(as_text=True)
    long = "字" * 5001
    response = client.post(f"/c/contacts/{contact_id}/reply", data={"text": long, "key": key})
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "at most 5000 characters" in html and long in html
    assert reply_key(html) == key
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Outbox.id)).filter_by(purpose="typed")) == 0


def test_a_blocked_customer_gets_nothing(app, client, line, friend):
    user_id, contact_id = friend
    key = reply_key(page_of(client, contact_id))
    line.control.unfollow(line.id, user_id)
    worker.process_pending(app)
    html = page_of(client, contact_id)
    assert "has blocked the account" in html and 'name="key"' not in html
    response = client.post(f"/c/contacts/{contact_id}/reply", data={"text": "hi", "key": key})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Outbox.id)).filter_by(purpose="typed")) == 0


# ---- the monthly quota -------------------------------------------------------------------------------------

def test_the_quota_is_shown_and_warns_from_80_percent(app, client, line, friend):
    _user_id, contact_id = friend
    line.control.update(line.id, quota=10)
    html = page_of(client, contact_id)
    assert "0 of 10 messages used this month (0%)." in html and 'data-warn="false"' in html
    with app.app_context():
        for n in range(8):
            replies._quota_cache.clear()
            contact = db.session.get(Contact, contact_id)
            row, _created = replies.send(contact, f"push {n}", str(uuid.uuid4()))
        from wizard.outgoing import outbox
        outbox.send_due()
        replies._quota_cache.clear()
    html = page_of(client, contact_id)
    assert "8 of 10 messages used this month (80%)." in html and 'data-warn="true"' in html
    assert "Only 2 messages are left this month." in html
    assert 'id="push-warning"' not in html


def test_the_quota_is_read_from_line_at_most_every_few_minutes(app, line, friend):
    with app.app_context():
        from wizard.models import Channel
        channel = db.session.scalar(db.select(Channel))
        first = replies.quota(channel)
        line.control.update(line.id, quota=5)
        assert replies.quota(channel) is first  # cached
        app.config["QUOTA_CACHE_SECONDS"] = 0
        assert replies.quota(channel).limit == 5


def test_a_push_over_the_quota_is_warned_before_and_shown_as_not_sent(app, client, line, friend):
    user_id, contact_id = friend
    line.control.update(line.id, quota=0)
    html = page_of(client, contact_id)
    assert 'id="push-warning"' in html and "The monthly quota is used up" in html
    client.post(f"/c/contacts/{contact_id}/reply", data={"text": "本月特價", "key": reply_key(html)})
    with app.app_context():
        from wizard.outgoing import outbox
        outbox.send_due()
        row = db.session.scalar(db.select(Outbox).filter_by(purpose="typed"))
        assert row.status == "failed" and row.error.startswith("monthly_limit")
    assert not any(m["delivered"] and m["message"].get("text") == "本月特價"
                   for m in line.control.sent_messages(line.id, user_id))
    html = page_of(client, contact_id)
    assert 'data-status="failed"' in html, html[html.find('class="messages"'):][:3000]
    assert "Not sent: this month's message quota is used up." in html


@pytest.mark.parametrize("name, shown", [
    ("報價單\r\nSet-Cookie: x=1.pdf", "報價單 Set-Cookie: x=1.pdf"),
    ("a\x00b\u2028c\u200e.txt", "ab c .txt"),
    ('..\\../"secret".pdf', '_..__secret_.pdf'),
    ("\r\n", None),
])
def test_a_file_name_with_line_breaks_or_control_characters_downloads_under_a_safe_name(app, client, line, friend,
                                                                                       name, shown):
    user_id, contact_id = friend
    line.control.send(line.id, user_id, "file", fileName=name, content=b"hello", content_type="text/plain")
    worker.process_pending(app)
    with app.app_context():
        content.fetch_due()
        message_id = db.session.scalar(db.select(Message.id).filter_by(type="file"))
    download = client.get(f"/c/contacts/{contact_id}/messages/{message_id}/content")
    assert download.status_code == 200 and download.data == b"hello"
    disposition = download.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "Set-Cookie" not in download.headers
    from urllib.parse import unquote
    expected = shown or "line-file-"
    assert expected in unquote(disposition), disposition


@pytest.mark.parametrize("given, kept", [
    ("http://profile.line-scdn.net/0h-abc", "https://profile.line-scdn.net/0h-abc"),
    ("https://profile.line-scdn.net/0h-abc", "https://profile.line-scdn.net/0h-abc"),
    ("javascript:alert(1)", None),
    ("data:image/svg+xml,<svg onload=alert(1)>", None),
])
def test_profile_pictures_are_shown_over_https_only(app, client, line, friend, given, kept):
    from sqlalchemy import update

    from wizard.customers import profiles
    from wizard.sandbox.store import users
    user_id, contact_id = friend
    line.control.store.run(update(users).where(users.c.user_id == user_id).values(picture_url=given))
    with app.app_context():
        assert profiles.fetch_profile(contact_id) is None
    assert line.contact(user_id).picture_url == kept
    html = page_of(client, contact_id)
    assert 'src="http://profile' not in html and "javascript:" not in html
    if kept:
        assert f'src="{kept}"' in html


def test_a_shops_media_stops_being_kept_at_its_storage_quota_and_the_page_says_so(app, client, line, friend):
    app.config["LINE_CONTENT_SHOP_QUOTA_BYTES"] = 1000
    user_id, contact_id = friend
    line.control.send(line.id, user_id, "image", content=b"a" * 600, content_type="image/jpeg")
    line.control.send(line.id, user_id, "image", content=b"b" * 600, content_type="image/jpeg")  # past 1000
    line.control.send(line.id, user_id, "image", content=b"c" * 300, content_type="image/jpeg")  # still fits
    worker.process_pending(app)
    with app.app_context():
        assert content.fetch_due() == 3
        rows = db.session.scalars(db.select(MessageContent).order_by(MessageContent.id)).all()
        assert [(r.status, r.data is not None) for r in rows] == [
            ("ready", True), ("over_quota", False), ("ready", True)]
    html = page_of(client, contact_id)
    assert html.count("data-over-quota") == 1
    assert "Picture: not kept here, because this shop's storage for customers' files is full." in html
    app.config["LINE_CONTENT_SHOP_QUOTA_BYTES"] = 800  # already past it: LINE is not even asked
    line.control.send(line.id, user_id, "file", fileName="a.txt", content=b"d" * 200)
    worker.process_pending(app)
    with app.app_context():
        content.fetch_due()
        last = db.session.scalars(db.select(MessageContent).order_by(MessageContent.id.desc())).first()
        assert (last.status, last.attempts, last.size) == ("over_quota", 1, None)


def test_a_form_whose_reply_was_cut_off_says_so_and_is_sent_again_on_a_press(app, client, line, make_shop,
                                                                             login):
    """A consumer killed while LINE was asked to reply with the form leaves it of unknown fate: the contact's
    page says it may not have arrived and offers a button that pushes it, once, with a new link."""
    from datetime import timedelta

    from wizard.outgoing import outbox
    login(f"owner-{line.slug}@example.com")
    client.get("/?lang=en")
    user_id = line.follow(name="林小美")
    with app.app_context():  # the worker takes the form, asks LINE ... and dies before it hears back
        worker.drain(after_commit=lambda effects: None)
        [row] = db.session.scalars(db.select(Outbox)).all()
        db.session.execute(db.update(Outbox).values(
            status="sending", attempts=1, called_at=utcnow(), claimed_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        outbox.recover_in_flight()
        assert db.session.get(Outbox, row.id).status == "unknown"
        contact_id = db.session.scalar(db.select(Contact.id))
    html = page_of(client, contact_id)
    assert "The customer data form may not have reached the customer" in html and "May not have arrived" in html
    action = re.search(r'action="(/c/contacts/\d+/outbox/\d+/send-again)"', html).group(1)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    data = {"csrf_token": token.group(1)} if token else {}
    for _ in range(2):  # a double press sends it once
        assert client.post(action, data=data).status_code == 302
    with app.app_context():
        outbox.send_due()
    [pushed] = [m for m in line.control.sent_messages(line.id, user_id) if m["kind"] == "push"]
    assert "/form/" in pushed["message"]["text"]
    html = page_of(client, contact_id)
    assert "data-unknown-fate" not in html and 'data-status="sent"' in html


def test_the_quota_counts_a_push_right_after_it_is_sent(app, client, line, friend):
    """LINE's count was read when the page was drawn; the page after a push shows the push used at once,
    and once it is sent it is counted once (not again when LINE is asked anew)."""
    _user_id, contact_id = friend
    line.control.update(line.id, quota=10)
    html = page_of(client, contact_id)
    assert "0 of 10 messages used this month (0%)." in html and 'data-method="push"' in html
    answer = client.post(f"/c/contacts/{contact_id}/reply", data={"text": "週末特價", "key": reply_key(html)})
    assert answer.status_code == 302
    assert "1 of 10 messages used this month (10%)." in page_of(client, contact_id)  # on its way: counted
    with app.app_context():
        from wizard.outgoing import outbox
        outbox.send_due()
    assert "1 of 10 messages used this month (10%)." in page_of(client, contact_id)  # sent: still once
    app.config["QUOTA_CACHE_SECONDS"] = 0  # LINE asked again: its count has the push now, ours adds nothing
    assert "1 of 10 messages used this month (10%)." in page_of(client, contact_id)


def test_a_reply_the_queue_cannot_take_is_logged_with_its_row_and_the_sweep_sends_it(app, client, line, friend,
                                                                                     caplog):
    """The queue's store is away when staff press Send: the page still says the message is on its way (its row
    is committed), the log names the row and says the sweep sends it, and the next sweep does."""
    from wizard import jobs
    from wizard.outgoing import outbox
    user_id, contact_id = friend
    app.config["QUEUE_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    app.extensions.pop("huey", None)
    with caplog.at_level("WARNING", logger="wizard.queue"):
        response = client.post(f"/c/contacts/{contact_id}/reply", data={"text": "明天見！",
                                                                         "key": reply_key(page_of(client, contact_id))})
    assert response.status_code == 302
    [row] = [r for r in line.outbox() if r.purpose == "typed"]
    assert row.status == "queued"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "wizard.queue"]
    assert f"could not queue send_message for outbox {row.id}" in warning and "the sweeper will" in warning
    app.config["QUEUE_URL"] = "sqlite:///" + app.instance_path + "/huey.db"
    app.extensions.pop("huey", None)
    with app.app_context():
        assert row.id in outbox.due_ids()
        jobs.sweep()  # rings for the row ...
    run_queue(app)  # ... and a consumer sends it
    assert [r.status for r in line.outbox() if r.purpose == "typed"] == ["sent"]
    assert [m["message"]["text"] for m in line.control.sent_messages(line.id, user_id)][-1] == "明天見！"
