"""The templates' pictures (plans/media.py) as an owner and LINE meet them: a phone photo of any kind (MPO
included) is taken; a request over the limit gets a page in the owner's language and stores nothing; a file
that is not a readable picture, or a "decompression bomb", is refused by name next to its field; a shop uses
and stores only its own pictures, up to its limit; /media/ serves only stored pictures, as JPEG; and the
hourly cleanup deletes what nothing uses, never a picture a template or a sending plan still needs."""
import io
import os
import re
import struct
import zlib
from datetime import timedelta

import pytest
from PIL import Image

from tests.test_message_templates_pages import OWNER, field_error, page, picture, post, saved
from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import MediaUpload, MessageTemplate, OutgoingBatch, Shop, utcnow
from wizard.plans import media


def uploads(app):
    with app.app_context():
        rows = db.session.scalars(db.select(MediaUpload).order_by(MediaUpload.id)).all()
        db.session.expunge_all()
        return rows


def files(app):
    folder = os.path.join(app.instance_path, "media")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def upload(client, slug, data, filename="photo.jpg"):
    """The builder's preview with a picture chosen: (the stored picture's address or None, the page)."""
    response = post(client, slug, {"name": "圖", "messages-0-kind": "image",
                                   "messages-0-image": (io.BytesIO(data), filename), "action": "preview"})
    html = page(response)
    found = re.search(r'name="messages-0-url" value="([^"]*)"', html)
    return (found.group(1) or None) if found else None, html


def jpeg(size=(800, 600), colour=(0, 120, 0)):
    return picture(size=size, kind="JPEG", mode="RGB", colour=colour).getvalue()


def noise_jpeg(side, quality=95):
    """A real photo-sized JPEG (noise compresses as badly as a photo's detail)."""
    data = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(data, "JPEG", quality=quality)
    return data.getvalue()


def shop_id(app, slug):
    with app.app_context():
        return db.session.scalar(db.select(Shop.id).filter_by(slug=slug))


# ---- too large: the request limit -----------------------------------------------------------------------

def test_a_request_over_the_limit_gets_a_page_in_the_owners_language_and_stores_nothing(app, client, owner):
    assert app.config["MAX_CONTENT_LENGTH"] == 12 * 1024 * 1024
    too_large = os.urandom(13 * 1024 * 1024)
    response = post(client, owner, {"name": "大圖", "messages-0-kind": "image",
                                    "messages-0-image": (io.BytesIO(too_large), "huge.jpg"), "action": "save"})
    html = page(response)
    assert response.status_code == 413
    assert "This picture is too large" in html and "at most 10 MB (LINE's limit)" in html
    assert "Nothing was saved." in html
    # In Chinese, the language an owner reads by default.
    client.get("/?lang=zh_Hant_TW")
    response = post(client, owner, {"name": "大圖", "messages-0-kind": "image",
                                    "messages-0-image": (io.BytesIO(too_large), "huge.jpg"), "action": "save"},
                    path="new")
    html = page(response)
    assert response.status_code == 413 and "這張圖片太大了" in html and "最大 10 MB" in html
    # nginx's own 413 on the builder's pages is sent to /too-large: the same page, with the owner's session.
    response = client.get("/too-large", headers={"Referer": f"http://localhost/c/{owner}/templates/new"})
    assert response.status_code == 413 and "這張圖片太大了" in page(response)
    assert f'href="http://localhost/c/{owner}/templates/new"' in page(response)  # the way back
    assert uploads(app) == [] and files(app) == [] and saved(app) == []


def test_a_picture_over_10_mb_within_the_request_limit_is_refused_next_to_its_field(app, client, owner):
    address, html = upload(client, owner, os.urandom(10 * 1024 * 1024 + 1000))
    assert address is None
    assert field_error(html, "messages-0-image") == \
        "The picture is larger than 10 MB: LINE does not take it. Choose a smaller one."
    assert uploads(app) == [] and files(app) == []


# ---- what is a picture ----------------------------------------------------------------------------------

def mpo(first=(200, 40, 40), second=(40, 40, 200), size=(400, 200), orientation=None):
    """A phone photo as many phones write it: an MPO (a JPEG, then a second picture)."""
    image, other = Image.new("RGB", size, first), Image.new("RGB", size, second)
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    data = io.BytesIO()
    image.save(data, "MPO", save_all=True, append_images=[other], **extra)
    return data.getvalue()


def test_a_phone_photo_written_as_mpo_is_taken_as_its_first_picture(app, client, owner):
    photo = mpo(orientation=6)  # held upright: the phone says "turn it a quarter"
    with Image.open(io.BytesIO(photo)) as probe:
        assert probe.format == "MPO" and probe.n_frames == 2  # what Pillow reads in a Samsung's or iPhone's photo
    address, html = upload(client, owner, photo)
    assert address, field_error(html, "messages-0-image")
    served = client.get(address[len(app.config["PUBLIC_BASE_URL"]):])
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(served.data)) as shown:
        assert shown.format == "JPEG" and shown.size == (200, 400)  # turned as the phone said
        assert shown.getpixel((100, 200)) == pytest.approx((200, 40, 40), abs=8)  # the first picture, not the second
    [row] = uploads(app)
    assert row.size == sum(os.path.getsize(os.path.join(app.instance_path, "media", f))
                           for f in files(app))


def png_header(width, height):
    """A PNG that says it is ``width`` × ``height``: its header, then one tiny row of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def real_png():
    return picture(size=(300, 200)).getvalue()


@pytest.mark.parametrize("data, filename, words", [
    (png_header(20_000, 20_000), "bomb.png", "The picture has too many pixels; choose one of at most 40 megapixels."),
    (png_header(8_000, 6_000), "big.png", "The picture has too many pixels; choose one of at most 40 megapixels."),
    (b"\x89PNG\r\n\x1a\n" + os.urandom(2000), "fake.png", "This file is not a picture that can be read (JPEG or PNG)."),
    (real_png()[:300], "cut.png", "This file is not a picture that can be read (JPEG or PNG)."),
    (b"just some text, not a picture\n", "notes.png", "This file is not a picture that can be read (JPEG or PNG)."),
    (b"", "empty.jpg", "The file is empty. Choose a picture (JPEG or PNG) to upload."),
], ids=["decompression-bomb", "over-40-megapixels", "png-signature-then-noise", "truncated-png", "text", "empty"])
def test_a_file_that_is_not_a_picture_we_take_is_refused_by_name_and_stores_nothing(app, client, owner, data,
                                                                                     filename, words):
    address, html = upload(client, owner, data, filename)
    assert address is None
    assert field_error(html, "messages-0-image") == words
    assert uploads(app) == [] and files(app) == []


def test_the_refusals_speak_chinese_by_default(app, client, owner):
    client.get("/?lang=zh_Hant_TW")
    _, html = upload(client, owner, png_header(20_000, 20_000), "bomb.png")
    assert field_error(html, "messages-0-image") == "圖片的像素太多，請選擇 4000 萬像素以內的圖片。"
    _, html = upload(client, owner, b"", "empty.jpg")
    assert field_error(html, "messages-0-image") == "這個檔案是空的，請選擇要上傳的圖片（JPEG 或 PNG）。"


# ---- a shop's own pictures ------------------------------------------------------------------------------

def test_the_same_file_chosen_again_is_stored_once(app, client, owner):
    photo = jpeg()
    first, _ = upload(client, owner, photo)
    again, _ = upload(client, owner, photo)
    other, _ = upload(client, owner, jpeg(colour=(1, 2, 3)))
    assert first and first == again and other != first
    assert len(uploads(app)) == 2 and len(files(app)) == 4


def test_a_template_uses_only_its_own_shops_stored_pictures(app, client, owner, make_shop, login):
    theirs, _ = upload(client, owner, jpeg())
    other, other_owner = make_shop("calm-tea", "平靜茶坊")
    make_channel(app, other)
    client.post("/logout")
    login(other_owner)
    client.get("/?lang=en")
    # Through the builder: another shop's picture address put into the form.
    html = page(post(client, other, {"name": "借圖", "messages-0-kind": "image", "messages-0-url": theirs,
                                     "action": "save"}))
    assert field_error(html, "messages-0-image") == "Upload the picture again here."
    # Through the API, in a card.
    card = {"type": "flex", "altText": "借圖", "contents": {
        "type": "bubble", "hero": {"type": "image", "url": theirs},
        "body": {"type": "box", "layout": "vertical", "contents": [{"type": "text", "text": "借圖"}]}}}
    response = client.post(f"/api/v1/shops/{other}/templates", json={"name": "借圖", "messages": [card]})
    assert response.status_code == 400
    assert response.get_json()["problems"]["messages[0]"].startswith(
        "This picture is not one of this shop's uploaded pictures, or it has been removed.")
    assert saved(app) == []
    # Its own picture, once its files are gone (a disk restored without them), is refused the same way.
    mine, _ = upload(client, other, jpeg(colour=(9, 9, 9)))
    assert mine and mine != theirs
    name = mine.rsplit("/", 1)[1]
    os.remove(os.path.join(app.instance_path, "media", name))
    html = page(post(client, other, {"name": "舊圖", "messages-0-kind": "image", "messages-0-url": mine,
                                     "action": "save"}))
    assert field_error(html, "messages-0-image") == "Upload the picture again here."
    assert saved(app) == []


def test_a_shop_stores_pictures_up_to_its_limit(app, client, owner, make_shop, login):
    app.config["MEDIA_SHOP_MAX_PICTURES"] = 2
    first, _ = upload(client, owner, jpeg(colour=(1, 1, 1)))
    second, _ = upload(client, owner, jpeg(colour=(2, 2, 2)))
    third, html = upload(client, owner, jpeg(colour=(3, 3, 3)))
    assert first and second and third is None
    assert field_error(html, "messages-0-image").startswith(
        "This shop&#39;s pictures have reached their limit (200 MB or 2 pictures).")
    again, _ = upload(client, owner, jpeg(colour=(1, 1, 1)))  # one already stored is still usable
    assert again == first
    client.get("/?lang=zh_Hant_TW")
    _, html = upload(client, owner, jpeg(colour=(4, 4, 4)))
    assert field_error(html, "messages-0-image").startswith("本店儲存的圖片已達上限（200 MB 或 2 張）")
    # By bytes too; and another shop has its own room.
    app.config.update(MEDIA_SHOP_MAX_PICTURES=2000, MEDIA_SHOP_QUOTA_BYTES=sum(r.size for r in uploads(app)) + 10)
    assert upload(client, owner, jpeg(colour=(5, 5, 5)))[0] is None
    other, other_owner = make_shop("calm-tea", "平靜茶坊")
    client.post("/logout")
    login(other_owner)
    assert upload(client, other, jpeg(colour=(6, 6, 6)))[0]
    assert [r.shop_id for r in uploads(app)] == [shop_id(app, owner)] * 2 + [shop_id(app, other)]
    assert len(files(app)) == 6


# ---- serving --------------------------------------------------------------------------------------------

def test_only_stored_pictures_are_served_as_jpeg(app, client, owner):
    address, _ = upload(client, owner, real_png(), "logo.png")
    name = address.rsplit("/", 1)[1]
    client.post("/logout")  # LINE fetches without signing in
    for path in (f"/media/{name}", f"/media/{name[:-4]}-preview.jpg"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "image/jpeg", path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # A file of the right shape in the folder, but no upload of any shop: not served.
    stray = "B" * 32 + ".jpg"
    with open(os.path.join(app.instance_path, "media", stray), "wb") as handle:
        handle.write(jpeg())
    assert client.get(f"/media/{stray}").status_code == 404
    # Nothing but a picture's name: no other file, no path, however spelled.
    with open(os.path.join(app.instance_path, "secret.txt"), "w") as handle:
        handle.write("secret")
    for path in ("/media/..%2Fsecret.txt", "/media/%2E%2E%2Fsecret.txt", "/media/../secret.txt",
                 f"/media/{name}/..", f"/media/{name[:-4]}.jpg.part", f"/media/{name[:-4]}.png",
                 "/media/" + "." * 32 + ".jpg"):
        response = client.get(path)
        assert response.status_code == 404 and b"secret" not in response.data, path


# ---- the cleanup ----------------------------------------------------------------------------------------

def _stored(app, slug, colour):
    """A stored picture of the shop (as an upload makes it): its public address."""
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        with app.test_request_context():
            return media.save(io.BytesIO(jpeg(colour=colour)), shop)["url"]


def _clean(app, days):
    with app.app_context():
        return media.clean_up(now=utcnow() + timedelta(days=days))


def _names(app):
    return {row.name for row in uploads(app)}


def _base(address):
    return address.rsplit("/", 1)[1][:-4]


def test_the_cleanup_deletes_what_nothing_uses_and_keeps_what_a_template_or_a_sending_plan_uses(app, make_shop):
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    abandoned = _stored(app, slug, (1, 1, 1))  # uploaded in the builder, never saved
    in_template = _stored(app, slug, (2, 2, 2))
    in_chunk = _stored(app, slug, (3, 3, 3))  # the template was changed while its plan sends
    sent = _stored(app, slug, (4, 4, 4))  # its chunk went out; the template still has it
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        card = {"type": "flex", "altText": "卡", "contents": {"type": "bubble", "hero": {
            "type": "image", "url": in_template}}}
        template = MessageTemplate(shop_id=shop.id, name="春季", messages=[
            card, {"type": "image", "originalContentUrl": sent, "previewImageUrl": media.preview_of(sent)}])
        db.session.add(template)
        for seq, (address, status) in enumerate([(in_chunk, "queued"), (sent, "sent")]):
            db.session.add(OutgoingBatch(
                channel_id=channel["id"], owner="send_plan", owner_id=1, run_key="2026-12-08", seq=seq,
                kind="multicast", recipients=[[1, "U" + "0" * 32]], recipient_count=1, status=status,
                messages=[{"type": "image", "originalContentUrl": address,
                           "previewImageUrl": media.preview_of(address)}], retry_key=f"key-{seq}"))
        db.session.commit()
        template_id = template.id
    folder = os.path.join(app.instance_path, "media")
    leftovers = ["C" * 32 + ".jpg", "C" * 32 + "-preview.jpg", _base(in_template) + ".jpg.part"]
    for name in leftovers:  # a crash between a file and its row; a write cut short
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"x")
    everything = set(files(app))

    assert _clean(app, 0.5) == {"pictures": 0, "files": 0}  # nothing is a day old yet
    assert set(files(app)) == everything

    assert _clean(app, 2) == {"pictures": 1, "files": 3}
    assert _names(app) == {_base(in_template), _base(in_chunk), _base(sent)}
    assert set(files(app)) == everything - set(leftovers) - {f"{_base(abandoned)}.jpg",
                                                              f"{_base(abandoned)}-preview.jpg"}

    # The chunk is sent and the template deleted: what they used is kept 30 days after they last used it,
    # since a customer may still open those messages.
    with app.app_context():
        db.session.execute(db.update(OutgoingBatch).values(status="sent"))
        db.session.delete(db.session.get(MessageTemplate, template_id))
        db.session.commit()
    assert _clean(app, 20) == {"pictures": 0, "files": 0}
    assert _clean(app, 2 + 31) == {"pictures": 3, "files": 0}
    assert uploads(app) == [] and files(app) == []


def test_a_template_saved_with_a_picture_keeps_it_past_the_cleanup(app, client, line, login):
    """Through the pages and LINE's check: the picture the owner saved is kept and served the next day; the
    one they uploaded first and replaced is not."""
    login(OWNER)
    client.get("/?lang=en")
    replaced, _ = upload(client, line.slug, jpeg(colour=(10, 10, 10)))
    kept, _ = upload(client, line.slug, jpeg(colour=(20, 20, 20)))
    response = post(client, line.slug, {"name": "圖", "messages-0-kind": "image", "messages-0-url": kept,
                                        "action": "save"})
    assert response.status_code == 302, field_error(page(response), "messages-0-image") or page(response)
    assert _clean(app, 2) == {"pictures": 1, "files": 0}
    assert client.get(kept[len(app.config["PUBLIC_BASE_URL"]):]).status_code == 200
    assert client.get(replaced[len(app.config["PUBLIC_BASE_URL"]):]).status_code == 404
    assert _names(app) == {_base(kept)}


def test_the_hourly_job_runs_the_cleanup(app, make_shop):
    """The queue's periodic task (jobs.py), once per hour across consumers, with the real clock: a picture
    uploaded two days ago that nothing uses goes."""
    from wizard import jobs, queue
    slug, _ = make_shop()
    old = _stored(app, slug, (7, 7, 7))
    two_days_ago = utcnow() - timedelta(days=2)
    with app.app_context():
        db.session.execute(db.update(MediaUpload).values(created_at=two_days_ago, touched_at=two_days_ago))
        db.session.commit()
    assert queue.JOBS["media_cleanup"].body is jobs.periodic_media_cleanup
    with app.app_context():
        jobs.periodic_media_cleanup()
    assert _base(old) not in _names(app) and files(app) == []
    fresh = _stored(app, slug, (8, 8, 8))
    with app.app_context():
        db.session.execute(db.update(MediaUpload).values(touched_at=two_days_ago))
        db.session.commit()
        jobs.periodic_media_cleanup()  # the same hour: another consumer's run does nothing
    assert _names(app) == {_base(fresh)}


def test_a_template_saved_while_the_cleanup_looks_keeps_its_picture(app, make_shop, db_url):
    """The save marks its pictures used (``media.take``) in its own transaction; the cleanup, which saw the
    picture unused a moment before, deletes only what is still unused when it writes. On PostgreSQL its delete
    is made to wait for the save's commit (polled in pg_stat_activity), then finds the picture taken."""
    import threading
    slug, _ = make_shop()
    address = _stored(app, slug, (5, 5, 5))
    two_days_ago = utcnow() - timedelta(days=2)
    with app.app_context():
        db.session.execute(db.update(MediaUpload).values(created_at=two_days_ago, touched_at=two_days_ago))
        db.session.commit()
    outcome = {}

    def cleanup():
        with app.app_context():
            outcome.update(media.clean_up())

    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        messages = [{"type": "image", "originalContentUrl": address, "previewImageUrl": media.preview_of(address)}]
        assert media.take(shop, messages) == {}  # the save's write, not yet committed
        db.session.add(MessageTemplate(shop_id=shop.id, name="圖", messages=messages))
        db.session.flush()
        looking = threading.Thread(target=cleanup, daemon=True)
        looking.start()
        if db_url.startswith("postgresql"):
            deadline = utcnow() + timedelta(seconds=60)
            with db.engine.connect() as watcher:
                while not watcher.execute(db.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'DELETE FROM media_uploads%'")).scalar():
                    assert utcnow() < deadline, "the cleanup's delete never waited for the save"
                    watcher.rollback()
        db.session.commit()
    looking.join(timeout=120)
    assert not looking.is_alive(), "the cleanup did not finish"
    assert outcome == {"pictures": 0, "files": 0}
    assert _names(app) == {_base(address)} and len(files(app)) == 2
