"""The sandbox's state: its own tables on its own engine, never the app's ``db``.

The served sandbox and the ``flask sandbox …`` commands are separate processes, so everything the LINE side
knows (channels, their friends, issued tokens, reply tokens, messages our app sent, webhooks LINE sent) lives
in a database both can open. SQLAlchemy Core keeps it independent of the app's models and migrations; the
tables are created on first use. Times are epoch seconds (floats): the sandbox only compares and shows them.
"""
import threading
import time
from contextlib import contextmanager, nullcontext

from sqlalchemy import (JSON, Boolean, Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String,
                        Table, Text, create_engine, event)
from sqlalchemy.pool import NullPool

metadata = MetaData()

channels = Table(
    "sandbox_channels", metadata,
    Column("channel_id", String(10), primary_key=True),
    Column("secret", String(32), nullable=False),
    Column("bot_user_id", String(33), nullable=False, unique=True),
    Column("basic_id", String(20), nullable=False, unique=True),
    Column("premium_id", String(40)),
    Column("display_name", String(100), nullable=False),
    Column("picture_url", String(500)),
    Column("endpoint", String(500)),
    Column("webhook_active", Boolean, nullable=False, default=True),
    Column("chat_mode", String(4), nullable=False, default="chat"),
    Column("tokens_issued", Integer, nullable=False, default=0),
    # Failure injection: answer every call for this channel with fail_status (while fail_times is None or
    # above 0), and wait fail_delay seconds before answering anything.
    Column("fail_status", Integer),
    Column("fail_times", Integer),
    Column("fail_delay", Float, nullable=False, default=0.0),
    # With an injected 429 or 503: the Retry-After (seconds) LINE sends along, if any.
    Column("fail_retry_after", Integer),
    Column("created_at", Float, nullable=False),
    # The monthly message quota (GET /v2/bot/message/quota): quota_type "none" (no target limit) or "limited"
    # with quota_value messages a month. NULL (a channel made before quotas existed) means the defaults.
    Column("quota_type", String(7)),
    Column("quota_value", Integer),
    # How long after a (Japan-time) day ends LINE has counted its friends (GET /v2/bot/insight/followers answers
    # ``unready`` until then): seconds; NULL means at once.
    Column("insight_lag", Float),
)

users = Table(
    "sandbox_users", metadata,
    Column("channel_id", String(10), ForeignKey("sandbox_channels.channel_id", ondelete="CASCADE"),
           primary_key=True),
    Column("user_id", String(33), primary_key=True),
    Column("display_name", String(100), nullable=False),
    Column("picture_url", String(500)),
    Column("status_message", String(500)),
    Column("language", String(20)),
    Column("following", Boolean, nullable=False, default=False),
    Column("followed_at", Float),
    Column("blocked_at", Float),
    # When the user first added the account: LINE's friend count (insight/followers) counts first adds only.
    Column("first_followed_at", Float),
)

# Only a digest of each access token is kept: enough to authenticate a call and to count issues.
tokens = Table(
    "sandbox_tokens", metadata,
    Column("digest", String(64), primary_key=True),
    Column("channel_id", String(10), nullable=False, index=True),
    Column("expires_at", Float, nullable=False),
)

reply_tokens = Table(
    "sandbox_reply_tokens", metadata,
    Column("token", String(32), primary_key=True),
    Column("channel_id", String(10), nullable=False),
    Column("user_id", String(33), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

# Every message our app sent (reply, push, multicast, narrowcast, broadcast), one row per recipient and message
# object: what a customer would have received.
messages = Table(
    "sandbox_messages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(20), nullable=False),
    Column("channel_id", String(10), nullable=False),
    Column("user_id", String(40), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("message", JSON, nullable=False),
    Column("delivered", Boolean, nullable=False),
    Column("retry_key", String(36)),
    Column("request_id", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_sandbox_messages_channel", "channel_id", "id"),
    Index("ix_sandbox_messages_user", "channel_id", "user_id", "id"),
)

# Every send request LINE accepted (push, multicast, narrowcast, broadcast): its request ID and retry key (a
# repeat within 24 hours answers 409), its aggregation unit, how many friends it reached (what the monthly quota
# counts) and, for a narrowcast, its progress. Replies are free and carry no retry key: not kept here.
sends = Table(
    "sandbox_requests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(36), nullable=False, unique=True),
    Column("channel_id", String(10), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("retry_key", String(36)),
    Column("unit", String(30)),
    Column("messages", JSON, nullable=False),
    Column("targets", Integer, nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    # Narrowcast only: waiting, sending, succeeded or failed, with LINE's errorCode when failed.
    Column("phase", String(10)),
    Column("error_code", Integer),
    Column("failed_description", String(200)),
    Column("completed_at", Float),
    Index("ix_sandbox_requests_retry_key", "channel_id", "retry_key"),
    Index("ix_sandbox_requests_month", "channel_id", "created_at"),
)

# What users sent that has content to download (image, video, audio, file): GET /v2/bot/message/{id}/content.
# ``transcoding`` is the preparation status of a video or audio (processing, succeeded, failed); None otherwise.
contents = Table(
    "sandbox_contents", metadata,
    Column("message_id", String(20), primary_key=True),
    Column("channel_id", String(10), nullable=False, index=True),
    Column("user_id", String(33), nullable=False),
    Column("message_type", String(10), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("transcoding", String(10)),
    Column("created_at", Float, nullable=False),
)

# The markAsReadToken of every message event the sandbox sent, and when (if ever) the bot used it.
read_tokens = Table(
    "sandbox_read_tokens", metadata,
    Column("token", String(64), primary_key=True),
    Column("channel_id", String(10), nullable=False),
    Column("user_id", String(33), nullable=False),
    Column("message_id", String(20), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("read_at", Float),
    Index("ix_sandbox_read_tokens_channel", "channel_id", "user_id"),
)

# Calls to the webhook test endpoint, for LINE's limit of 60 an hour per channel.
webhook_tests = Table(
    "sandbox_webhook_tests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel_id", String(10), nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_sandbox_webhook_tests_channel", "channel_id", "at"),
)

# Every webhook the sandbox POSTed, with what the endpoint answered.
deliveries = Table(
    "sandbox_deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel_id", String(10), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("url", String(500), nullable=False),
    Column("body", Text, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("reason", String(40), nullable=False),
    Column("detail", String(500), nullable=False),
    Column("response_body", Text),
    Column("at", Float, nullable=False),
    Index("ix_sandbox_deliveries_channel", "channel_id", "id"),
)

# Two sandboxes created at once in one process must not both try to CREATE the same table.
_create_lock = threading.Lock()


def now() -> float:
    return time.time()


class Store:
    """An engine on the sandbox database plus a few helpers; callers write plain Core statements.

    Each helper call is a transaction of its own, except inside ``transaction()``: there every call of the
    thread shares one connection and one commit (a send's checks and writes; on SQLite each connection opened
    and closed costs milliseconds, which a bench of 200 multicasts notices)."""

    def __init__(self, database_url: str):
        self.url = database_url
        if database_url.startswith("sqlite"):
            # NullPool: no file handle outlives a call; the CLI and server processes never hold a lock idle.
            # hide_parameters: the sandbox's statements carry channel secrets and tokens; never into a log.
            self.engine = create_engine(database_url, poolclass=NullPool, connect_args={"timeout": 30},
                                        hide_parameters=True)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(database_url, pool_pre_ping=True, hide_parameters=True)
        with _create_lock:
            metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
        self._local = threading.local()

    @contextmanager
    def transaction(self):
        """One connection and one commit for every helper call of this thread inside (nested: the outer one)."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self.engine.begin() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def begin(self):
        """The thread's ``transaction()`` connection, or a new transaction of its own."""
        current = getattr(self._local, "conn", None)
        return nullcontext(current) if current is not None else self.engine.begin()

    def row(self, statement):
        with self.begin() as conn:
            found = conn.execute(statement).mappings().first()
            return dict(found) if found is not None else None

    def rows(self, statement):
        with self.begin() as conn:
            return [dict(found) for found in conn.execute(statement).mappings()]

    def scalar(self, statement):
        with self.begin() as conn:
            return conn.execute(statement).scalar()

    def run(self, *statements):
        """Execute in one transaction; returns the last statement's rowcount (rows an UPDATE touched)."""
        count = 0
        with self.begin() as conn:
            for statement in statements:
                count = conn.execute(statement).rowcount
        return count

    def close(self):
        self.engine.dispose()

    def drop(self):
        """Remove the sandbox's tables (tests sharing a PostgreSQL database clean up with this)."""
        metadata.drop_all(self.engine)


def _add_missing_columns(engine):
    """A sandbox database made by an older version lacks newer (nullable) columns: add them, keep its data.
    A text column that grew (``kind`` once held only "reply" and "push") is widened where the length is
    enforced (PostgreSQL; SQLite ignores it)."""
    from sqlalchemy import inspect
    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {column["name"]: column for column in inspector.get_columns(table.name)}
            for column in table.columns:
                kind = column.type.compile(dialect=engine.dialect)
                if column.name not in present and column.nullable:
                    conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                old_length = getattr(present.get(column.name, {}).get("type"), "length", None)
                new_length = getattr(column.type, "length", None)
                if engine.dialect.name == "postgresql" and old_length and new_length and old_length < new_length:
                    conn.exec_driver_sql(f'ALTER TABLE {table.name} ALTER COLUMN "{column.name}" TYPE {kind}')


def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets the served sandbox read while a CLI process writes; without fsync on every commit (state of a
    # test double need not survive a power cut); foreign keys make deletes cascade.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
