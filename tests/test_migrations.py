"""The migrations build exactly the tables the models describe, so ``make run``'s ``db upgrade`` and
production upgrades create the same schema the tests run on."""
import json
import logging
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import CheckConstraint
from sqlalchemy.exc import IntegrityError, StatementError

from wizard.extensions import db
from wizard.models import in_migrations
from wizard.statuses import EventStatus, ShopState


@pytest.fixture
def logging_kept():
    """Alembic's env.py configures logging from alembic.ini, as fits a one-off ``flask db upgrade``
    process: it disables every logger that exists and replaces the root handlers. In the test process that
    would silence the app's loggers for every later test (test_line_client's log assertions would then
    depend on the order of the tests), so the configuration in place before is put back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {name: (logger.disabled, logger.level, logger.handlers[:], logger.propagate)
               for name, logger in logging.Logger.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    yield
    root.handlers[:], root.level = handlers, level
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if name in loggers:
            logger.disabled, logger.level, logger.handlers[:], logger.propagate = loggers[name]
        else:  # made by the migration's configuration (alembic, sqlalchemy): back to defaults
            logger.disabled, logger.level, logger.propagate = False, logging.NOTSET, True
            logger.handlers[:] = []


def test_upgrade_matches_models_and_downgrade_cleans_up(app, logging_kept):
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade()
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(
                connection, opts={"compare_type": True, "include_name": in_migrations}),
                                    db.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        downgrade(revision="base")
        with db.engine.connect() as connection:
            tables = {name for name in db.inspect(connection).get_table_names()
                      if in_migrations(name, "table", {})} - {"alembic_version"}
        assert tables == set()
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def test_a_form_link_sent_before_the_upgrade_still_opens_the_customers_form(app, client, logging_kept):
    """Issue 9 keeps form tokens only as a digest and encrypted; the upgrade moves the stored ones over."""
    from datetime import datetime
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade(revision="fa4a7a51134c")
        with db.engine.begin() as connection:
            connection.execute(db.text(
                "INSERT INTO shops (id, slug, name, line_module_enabled, confirmations, created_at) "
                "VALUES (1, 'sunny-bakery', 'Sunny', true, '{}', :at)"), {"at": datetime(2026, 11, 30)})
            connection.execute(db.text(
                "INSERT INTO channels (id, shop_id, channel_id, secret_encrypted, webhook_token, connected_at, "
                "check_results) VALUES (1, 1, '1656000000', 'x', 'hook-token', :at, '{}')"),
                {"at": datetime(2026, 11, 30)})
            connection.execute(db.text(
                "INSERT INTO contacts (id, channel_id, line_user_id, display_name, form_token, form_sent_at, "
                "created_at, updated_at) VALUES (1, 1, :user, '林小美', :token, :at, :at, :at)"),
                {"user": "U" + "a" * 32, "token": "an-old-form-token-sent-before", "at": datetime.utcnow()})
        upgrade()
        from wizard.models import Contact
        contact = db.session.get(Contact, 1)
        assert contact.form_token == "an-old-form-token-sent-before"
        assert contact.form_link_issued_at is not None
        db.session.remove()
    assert client.get("/form/an-old-form-token-sent-before").status_code == 200
    with app.app_context():
        downgrade(revision="base")
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def test_pictures_templates_used_before_the_upgrade_are_still_served_after_it(app, client, logging_kept):
    """Issue 17 serves only pictures with a row in media_uploads: the upgrade writes the rows of the pictures
    templates already use (their shop, their files' size), so LINE keeps finding them; others get no row."""
    from datetime import datetime
    folder = Path(app.instance_path) / "media"
    folder.mkdir(parents=True, exist_ok=True)
    used, stray = "U" * 32, "S" * 32
    for base in (used, stray):
        (folder / f"{base}.jpg").write_bytes(b"j" * 300)
        (folder / f"{base}-preview.jpg").write_bytes(b"p" * 20)
    address = f"{app.config['PUBLIC_BASE_URL']}/media/{used}.jpg"
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade(revision="i16d_merge_issue16")
        with db.engine.begin() as connection:
            connection.execute(db.text(
                "INSERT INTO shops (id, slug, name, line_module_enabled, confirmations, created_at) "
                "VALUES (1, 'sunny-bakery', 'Sunny', true, '{}', :at)"), {"at": datetime(2026, 12, 1)})
            connection.execute(db.text(
                "INSERT INTO message_templates (shop_id, name, messages, created_at, updated_at) "
                "VALUES (1, '春季', :messages, :at, :at)"),
                {"messages": json.dumps([{"type": "image", "originalContentUrl": address,
                                          "previewImageUrl": address[:-4] + "-preview.jpg"}]),
                 "at": datetime(2026, 12, 1)})
        upgrade()
        from wizard.models import MediaUpload
        [row] = db.session.scalars(db.select(MediaUpload)).all()
        assert (row.shop_id, row.name, row.size, row.used) == (1, used, 320, True)
        db.session.remove()
    assert client.get(f"/media/{used}.jpg").status_code == 200
    assert client.get(f"/media/{used}-preview.jpg").status_code == 200
    assert client.get(f"/media/{stray}.jpg").status_code == 404
    with app.app_context():
        downgrade(revision="i16d_merge_issue16")
        assert "media_uploads" not in db.inspect(db.engine).get_table_names()
        downgrade(revision="base")
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def _rows_with_every_status():
    """One row of every table with a status, each with a status the product writes."""
    from wizard.models import (Alert, Channel, Contact, Message, MessageContent, Outbox, Shop, ShopCheck,
                               ShopHealth, ShopStateChange, WebhookDelivery, WebhookEvent)
    shop = Shop(slug="sunny-bakery", name="Sunny")
    channel = Channel(shop=shop, channel_id="1656000000", secret_encrypted="x", webhook_token="hook-token")
    db.session.add_all([shop, channel])
    db.session.flush()
    contact = Contact(channel_id=channel.id, line_user_id="U" + "a" * 32)
    delivery = WebhookDelivery(channel_id=channel.id, body="{}")
    db.session.add_all([contact, delivery])
    db.session.flush()
    event = WebhookEvent(channel_id=channel.id, delivery_id=delivery.id, webhook_event_id="01H", type="message",
                         timestamp=1, payload={})
    message = Message(channel_id=channel.id, contact_id=contact.id, direction="in", type="image")
    db.session.add_all([event, message])
    db.session.flush()
    db.session.add_all([
        ShopHealth(shop_id=shop.id, state="broken", reason="wrong_secret"),
        ShopStateChange(shop_id=shop.id, state="broken", reason="wrong_secret", previous_state="healthy",
                        previous_reason="connected"),
        ShopCheck(shop_id=shop.id, trigger="cli", state="broken", reason="wrong_secret"),
        Alert(shop_id=shop.id, state="dormant", reason="followers_without_follows"),
        Outbox(channel_id=channel.id, contact_id=contact.id, purpose="form", method="push", retry_key="k-1"),
        MessageContent(message_id=message.id, channel_id=channel.id, line_message_id="1", status="too_large"),
    ])
    db.session.commit()
    assert db.session.get(WebhookEvent, event.id).status is EventStatus.PENDING  # read back as the enum


STATUS_COLUMNS = [("shop_health", "state"), ("shop_state_changes", "state"),
                  ("shop_state_changes", "previous_state"), ("shop_checks", "state"), ("alerts", "state"),
                  ("webhook_events", "status"), ("outbox", "status"), ("message_contents", "status")]


def _refused(table, column):
    """Whether the database refuses a status nobody knows, written past the models (raw SQL)."""
    try:
        with db.engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE {table} SET {column} = 'proccessed'")
    except IntegrityError:
        return True
    return False


def test_the_database_refuses_a_status_the_product_does_not_know(app, logging_kept):
    """Issue 15: shop states and event, outbox and content statuses are enums (wizard/statuses.py) with CHECK
    constraints the migration adds; its downgrade takes them away again."""
    from wizard.models import ShopHealth
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade()
        inspector = db.inspect(db.engine)
        for table in db.metadata.sorted_tables:
            if not in_migrations(table.name, "table", {}):
                continue
            declared = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            migrated = {c["name"] for c in inspector.get_check_constraints(table.name)}
            assert migrated == declared, table.name
        _rows_with_every_status()
        assert [column for column in STATUS_COLUMNS if not _refused(*column)] == []

        health = db.session.scalar(db.select(ShopHealth))
        assert health.state is ShopState.BROKEN and health.state == "broken"
        health.state = "fine"
        with pytest.raises(StatementError, match="fine"):
            db.session.commit()  # refused before it reaches the database, too
        db.session.rollback()
        db.session.remove()

        downgrade(revision="i14e_contacts_order")
        assert [column for column in STATUS_COLUMNS if _refused(*column)] == []
        downgrade(revision="base")
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
