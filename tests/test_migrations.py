"""The migrations build exactly the tables the models describe, so ``make run``'s ``db upgrade`` and
production upgrades create the same schema the tests run on."""
import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from wizard.extensions import db
from wizard.models import in_migrations


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
