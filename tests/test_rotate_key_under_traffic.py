"""``flask rotate-key`` while LINE delivers: webhooks are never held up by the rotation (the README's runbook
rotates keys on a live system).

It used to lock every row it read (channels first, then every contact's form token) until one commit at the
end. The receiver writes a channel's last_delivery_at in the same statement as its deliveries, so while the
rotation ran, or waited for a contact row someone else held, every webhook waited with it."""
import threading
import time

import pytest
from cryptography.fernet import Fernet

from tests.webhooks import encode, make_channel, sign, text_event
from wizard import crypto
from wizard.extensions import db
from wizard.models import Channel, Contact, WebhookEvent, utcnow

WAIT = 30  # a bound for a busy machine; a webhook held up by the rotation would wait for all of it


def test_a_webhook_is_stored_while_rotate_key_waits_for_a_contact_someone_holds(app, db_url, client, runner,
                                                                                make_shop):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: a rotation's transaction holds every write anyway")
    channel = make_channel(app, make_shop()[0])
    with app.app_context():
        contact = Contact(channel_id=channel["id"], line_user_id="U" + "d" * 32, followed_at=utcnow())
        contact.form_token = "form-token-of-a-customer"
        db.session.add(contact)
        db.session.get(Channel, channel["id"]).last_delivery_at = None  # its next delivery writes the row
        db.session.commit()
        contact_id = contact.id
    old, new = app.config["ENCRYPTION_KEY"], Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEY"] = f"{new},{old}"

    # Someone (a page saving the customer's form, say) holds the contact's row in an open transaction.
    from sqlalchemy import create_engine, text
    holder = create_engine(db_url).connect()
    holder.execute(text("SELECT id FROM contacts WHERE id = :id FOR UPDATE"), {"id": contact_id})
    rotation, delivering = {}, None
    rotating = threading.Thread(target=lambda: rotation.setdefault("result", runner.invoke(args=["rotate-key"])))
    try:
        rotating.start()
        deadline = time.monotonic() + WAIT
        while not _waiting_for_a_lock(holder):
            assert time.monotonic() < deadline, "rotate-key never reached the contact's row"
            time.sleep(0.05)

        event = text_event("U" + "e" * 32, "during the rotation")
        body = encode({"destination": channel["bot_user_id"], "events": [event]})
        answers = []
        delivering = threading.Thread(target=lambda: answers.append(client.post(channel["path"], data=body, headers={
            "x-line-signature": sign(channel["secret"], body), "Content-Type": "application/json"})))
        delivering.start()
        delivering.join(WAIT)
        assert answers, f"the webhook was not answered within {WAIT} s while rotate-key waited for the contact"
        assert (answers[0].status_code, answers[0].get_json()) == (200, {"message": "ok", "stored": 1})
    finally:
        holder.rollback()
        holder.close()
        rotating.join(WAIT)
        if delivering is not None:
            delivering.join(WAIT)
    assert rotation["result"].exit_code == 0, rotation["result"].output
    assert "contacts.form_token_encrypted: 1 re-encrypted" in rotation["result"].output

    app.config["ENCRYPTION_KEY"] = new  # the old key dropped: everything reads under the new one alone
    with app.app_context():
        assert db.session.get(Contact, contact_id).form_token == "form-token-of-a-customer"
        assert db.session.get(Channel, channel["id"]).secret == channel["secret"]
        assert db.session.scalar(db.select(WebhookEvent.webhook_event_id)) == event["webhookEventId"]


def test_a_secret_saved_during_the_rotation_is_kept_not_overwritten_with_the_old_one(app, make_shop):
    """The rotation reads every value first and writes later: a value saved between the two (here, between
    the read and the write of the channel's row) is rotated from what it holds then, never replaced by the
    rotation of what it held before."""
    channel = make_channel(app, make_shop()[0])
    old, new = app.config["ENCRYPTION_KEY"], Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEY"] = f"{new},{old}"
    column = Channel.__table__.c.secret_encrypted
    with app.app_context():
        fernet = crypto._fernet()
        read = db.session.get(Channel, channel["id"]).secret_encrypted
        db.session.get(Channel, channel["id"]).secret = "the secret saved meanwhile"
        db.session.commit()
        assert crypto._rotate_row(db.session, fernet, column, Channel.__table__.c.id, channel["id"], read,
                                  fernet.rotate(read.encode()).decode())
        db.session.commit()
    app.config["ENCRYPTION_KEY"] = new
    with app.app_context():
        assert db.session.get(Channel, channel["id"]).secret == "the secret saved meanwhile"


def _waiting_for_a_lock(holder):
    """Whether another session of this database waits for a lock (the rotation, behind the holder)."""
    from sqlalchemy import text
    with holder.engine.connect() as connection:
        return connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")) > 0
