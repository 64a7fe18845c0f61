import logging
import random
import time
from logging.config import fileConfig

from flask import current_app

from alembic import context
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
fileConfig(config.config_file_name)
logger = logging.getLogger('alembic.env')


def get_engine():
    return current_app.extensions['migrate'].db.engine


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace(
            '%', '%%')
    except AttributeError:
        return str(get_engine().url).replace('%', '%%')


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option('sqlalchemy.url', get_engine_url())
target_db = current_app.extensions['migrate'].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def get_metadata():
    if hasattr(target_db, 'metadatas'):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url, target_metadata=get_metadata(), literal_binds=True
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    On PostgreSQL each attempt waits at most MIGRATION_LOCK_TIMEOUT for a lock (``_limit_lock_wait`` says
    why); an attempt that gives up has changed nothing (one transaction) and the whole upgrade runs again
    after a growing pause, MIGRATION_ATTEMPTS times at most. After the last, the oldest open transactions
    are logged and the upgrade fails with a message saying what to do.
    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, 'autogenerate', False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info('No changes in schema detected.')

    conf_args = current_app.extensions['migrate'].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()
    from wizard.models import in_migrations
    conf_args.setdefault("include_name", in_migrations)
    settings = current_app.config
    attempts = max(1, int(settings["MIGRATION_ATTEMPTS"]))
    for attempt in range(1, attempts + 1):
        try:
            with connectable.connect() as connection:
                context.configure(
                    connection=connection,
                    target_metadata=get_metadata(),
                    **conf_args
                )
                with context.begin_transaction():
                    _limit_lock_wait(connection, settings["MIGRATION_LOCK_TIMEOUT"])
                    context.run_migrations()
            return
        except OperationalError as exc:
            if not _lock_not_available(exc) or attempt == attempts:
                if _lock_not_available(exc):
                    _report_blockers(connectable)
                    raise RuntimeError(
                        f"The migration could not take its table locks in {attempts} attempts (each waited "
                        f"{settings['MIGRATION_LOCK_TIMEOUT']} s): a long transaction holds them (listed "
                        "above). Nothing was changed; end that transaction or run the upgrade again later."
                    ) from None
                raise
            delay = min(RETRY_DELAY_MAX, RETRY_DELAY_FIRST * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            logger.warning("attempt %s of %s: a table lock was not free within %s s; nothing was changed, "
                           "trying again in %.1f s", attempt, attempts, settings["MIGRATION_LOCK_TIMEOUT"], delay)
            time.sleep(delay)


# Between two attempts of a migration whose lock was not free: growing, with jitter, at most this long.
RETRY_DELAY_FIRST = 0.5
RETRY_DELAY_MAX = 15.0


def _limit_lock_wait(connection, seconds):
    """On PostgreSQL, a statement of this migration waits at most ``seconds`` for a lock, then fails.

    Why: ALTER TABLE needs an exclusive lock. While it waits behind a long transaction (a report, a backup, a
    forgotten session), every later INSERT of a webhook queues behind the ALTER, so intake stops for as long
    as that transaction lasts. With a short wait the ALTER gives up instead, the queue drains at once, and
    the whole migration (one transaction: nothing half done) is tried again a little later. ``SET LOCAL``
    ends with the transaction, so the setting never reaches the pool's other users. SQLite has one writer at
    a time and waits on its busy timeout instead."""
    if connection.dialect.name == "postgresql" and seconds:
        connection.execute(text("SELECT set_config('lock_timeout', :value, true)"),
                           {"value": f"{int(float(seconds) * 1000)}ms"})


def _lock_not_available(exc):
    """PostgreSQL's lock_not_available (SQLSTATE 55P03): the lock_timeout above ran out."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"


def _report_blockers(connectable):
    """Name the sessions with the oldest open transactions in this database, so an operator sees what holds
    the locks (pid, application, state, since when); never the text of their queries (it may hold data)."""
    try:
        with connectable.connect() as connection:
            rows = connection.execute(text(
                "SELECT pid, application_name, state, xact_start FROM pg_stat_activity "
                "WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid() "
                "ORDER BY xact_start LIMIT 5")).all()
    except Exception:  # the report is a courtesy: the error below says what happened anyway
        return
    for pid, application, state, since in rows:
        logger.error("open transaction: pid %s (%s), %s, since %s", pid, application or "-", state, since)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
