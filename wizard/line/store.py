"""The webhook tables' shared helpers: race-safe writes (insert-or-ignore, counters) and the traffic numbers.

SQLite and PostgreSQL both speak ``INSERT … ON CONFLICT``; SQLAlchemy exposes it per dialect, so wizard/rows.py
picks the dialect's ``insert`` once and the receiver, the worker and events.py never see the difference.
A conflicting row is skipped (or counted) by the database itself, so a concurrent duplicate cannot surface as
an IntegrityError and become a 500.
"""
import json
import logging
import weakref
from datetime import datetime, timedelta, timezone

import psycopg
import psycopg.errors
from psycopg import pq
from sqlalchemy import (BigInteger, Boolean, DateTime, Integer, Text, case, cast, column, false, func, literal,
                        literal_column, select, true, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSON

from ..extensions import db
from ..models import Channel, Contact, Message, WebhookDelivery, WebhookEvent, WebhookRejection, iso_utc, utcnow
from ..rows import dialect_insert, insert_ignoring  # noqa: F401  (wizard/rows.py; named here for line/)
from ..statuses import EventStatus
from .payload import is_redelivery

log = logging.getLogger(__name__)

# The receiver writes a channel's last_delivery_at at most once a second (a busy channel must not queue every
# transaction on its row), so a valid delivery may have come up to this long after the recorded time.
DELIVERY_TIME_RESOLUTION = timedelta(seconds=1)


def count_rejection(channel_id: int, reason: str) -> None:
    """Add one to the (channel, reason) counter in its own short transaction; never stores the body.

    It also keeps the streak: refusals in a row with no valid delivery between them. A refusal starts a new
    streak when the previous one came before the channel was connected again or before its last valid
    delivery (give or take the second last_delivery_at may lag, so a run of refusals counts only from a
    second after LINE last delivered: a forged POST beside real traffic never looks like a run). The
    decision is made inside the one upsert, against the row as it is then, so concurrent refusals neither
    lose a count nor start two streaks."""
    now = utcnow()
    channel = db.session.execute(db.select(Channel.last_delivery_at, Channel.connected_at)
                                 .where(Channel.id == channel_id)).first()
    # A previous refusal before this moment belongs to an earlier run (the channel deleted meanwhile: any).
    cut = now if channel is None else channel.connected_at
    if channel is not None and channel.last_delivery_at is not None:
        cut = max(cut, channel.last_delivery_at + DELIVERY_TIME_RESOLUTION)
    table = WebhookRejection.__table__
    broken = db.or_(table.c.last_at < cut, table.c.streak_since.is_(None))
    stmt = dialect_insert(WebhookRejection).values(
        channel_id=channel_id, reason=reason, count=1, first_at=now, last_at=now, streak=1, streak_since=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel_id", "reason"],
        set_={"count": WebhookRejection.count + 1, "last_at": now,
              "streak": db.case((broken, 1), else_=table.c.streak + 1),
              "streak_since": db.case((broken, now), else_=table.c.streak_since)},
    )
    db.session.execute(stmt)
    db.session.commit()


def event_time(timestamp_ms: int) -> datetime:
    """LINE's millisecond epoch timestamp as the naive UTC datetime every table stores."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def traffic_stats(shop) -> dict:
    """Webhook and contact numbers over every channel the shop has had (history survives a reconnect)."""
    ids = [channel.id for channel in shop.channels]

    def count(model, *where):
        return db.session.scalar(db.select(func.count()).select_from(model).where(
            model.channel_id.in_(ids), *where)) or 0

    by_status = dict(db.session.execute(
        db.select(WebhookEvent.status, func.count()).where(WebhookEvent.channel_id.in_(ids))
        .group_by(WebhookEvent.status)).all())
    by_type = dict(db.session.execute(
        db.select(WebhookEvent.type, func.count()).where(WebhookEvent.channel_id.in_(ids))
        .group_by(WebhookEvent.type)).all())
    rejections = {}
    for row in db.session.scalars(db.select(WebhookRejection).where(WebhookRejection.channel_id.in_(ids))):
        entry = rejections.setdefault(row.reason,
                                      {"count": 0, "first_at": row.first_at, "last_at": row.last_at})
        entry["count"] += row.count
        entry["first_at"] = min(entry["first_at"], row.first_at)
        entry["last_at"] = max(entry["last_at"], row.last_at)
    current = shop.channel
    return {
        "shop": shop.slug,
        "channel_id": current.channel_id if current else None,
        "deliveries": count(WebhookDelivery),
        "events": sum(by_status.values()),
        "processed": by_status.get(EventStatus.PROCESSED, 0),
        # "processing" is pending work too: claimed by a worker that has not finished (or died).
        "pending": by_status.get(EventStatus.PENDING, 0) + by_status.get(EventStatus.PROCESSING, 0),
        "failed": by_status.get(EventStatus.FAILED, 0),
        "rejected": sum(entry["count"] for entry in rejections.values()),
        "rejections": {reason: {"count": entry["count"], "first_at": iso_utc(entry["first_at"]),
                                "last_at": iso_utc(entry["last_at"])}
                       for reason, entry in sorted(rejections.items())},
        "contacts": count(Contact),
        "blocked": count(Contact, Contact.blocked_at.is_not(None)),
        "forms_sent": count(Contact, Contact.form_sent_at.is_not(None)),
        "forms_filled": count(Contact, Contact.form_filled_at.is_not(None)),
        "messages": count(Message),
        "messages_in": count(Message, Message.direction == "in"),
        "messages_out": count(Message, Message.direction == "out"),
        "event_types": dict(sorted(by_type.items())),
        "last_delivery_at": iso_utc(max((c.last_delivery_at for c in shop.channels if c.last_delivery_at),
                                     default=None)),
        "last_verified_at": iso_utc(max((c.last_verified_at for c in shop.channels if c.last_verified_at),
                                     default=None)),
    }


# ---- the receiver's batch writes, through the database driver itself ----------------------------------------
#
# The receiver writes a batch of deliveries and their events per transaction (group_commit.py), through the
# driver with one fixed SQL text: through SQLAlchemy's multi-row INSERT … RETURNING every batch size was a new
# text to parse and prepare, which cost more CPU than everything else the receiver does. On SQLite (in-process)
# a prepared row costs microseconds, so rows go one at a time in the caller's transaction; PostgreSQL takes the
# whole batch in one prepared statement (insert_batch_postgres).

class DriverInsert:
    """An INSERT built with SQLAlchemy Core from the model's table, for rows shaped as payload.py makes them, run
    through the driver's own cursor. The SQL text and the order of its parameters come from the statement
    compiled for the row's keys (once per dialect and set of keys), and each value is converted by its column
    type's own bind processor (a DateTime as SQLAlchemy stores it, the payload as JSON). So the columns are
    named only in models.py and the row shapes; what is skipped is SQLAlchemy's per-execution work, which
    cost more than SQLite's insert itself."""

    def __init__(self, stmt, dialect):
        self._stmt, self._dialect = stmt, dialect
        self._types = {column.key: column.type for column in stmt.table.columns}
        self._compiled = {}

    def execute(self, cursor, row):
        compiled = self._compiled.get(tuple(row))
        if compiled is None:
            compiled = self._compiled[tuple(row)] = self._compile(list(row))
        sql, convert = compiled
        cursor.execute(sql, [row[name] if process is None else process(row[name]) for name, process in convert])

    def _compile(self, keys):
        compiled = self._stmt.compile(dialect=self._dialect, column_keys=keys)
        return compiled.string, [(name, self._types[name].bind_processor(self._dialect))
                                 for name in compiled.positiontup]


_driver_inserts = weakref.WeakKeyDictionary()


def _sqlite_inserts(dialect):
    """(delivery insert, event insert-or-ignore) for this SQLite dialect, made on first use."""
    inserts = _driver_inserts.get(dialect)
    if inserts is None:
        deliveries, events = WebhookDelivery.__table__, WebhookEvent.__table__
        inserts = _driver_inserts.setdefault(dialect, (
            DriverInsert(sqlite.insert(deliveries), dialect),
            DriverInsert(sqlite.insert(events).on_conflict_do_nothing(
                index_elements=[events.c.channel_id, events.c.webhook_event_id]), dialect)))
    return inserts


def insert_deliveries(connection, deliveries):
    """Insert delivery rows (payload.delivery_row) on SQLite; returns their ids in the same order."""
    insert = _sqlite_inserts(connection.dialect)[0]
    ids, cursor = [], connection.connection.driver_connection.cursor()
    try:
        for row in deliveries:
            insert.execute(cursor, row)
            ids.append(cursor.lastrowid)
    finally:
        cursor.close()
    return ids


def insert_new_events(connection, events):
    """Insert event rows (payload.event_row) on SQLite, skipping any the channel already has; returns the
    delivery id of each row actually inserted."""
    insert = _sqlite_inserts(connection.dialect)[1]
    inserted, cursor = [], connection.connection.driver_connection.cursor()
    try:
        for row in events:
            insert.execute(cursor, row)
            if cursor.rowcount == 1:
                inserted.append(row["delivery_id"])
    finally:
        cursor.close()
    return inserted


# On PostgreSQL the receiver writes a whole batch in one statement on its own autocommit connection
# (group_commit.PostgresWriter): one round trip and one commit for every delivery queued, where a statement per
# table and a transaction around them cost three more round trips and most of the receiver's time. Delivery ids
# are drawn first (``batch``, materialised once), so events can name their delivery; the deliveries are written
# last, with the count of events that were new, because a statement's parts all see the same snapshot and the
# foreign keys are checked when it ends. Events go in as they came (ids in arrival order), so of one event
# twice in a batch the earlier delivery keeps it, and of one event twice in a body the first.
#
# The events are read out of each body by PostgreSQL (``json_array_elements``), in its own process: the
# receiver has already checked every field it reads here (receiver.parse_payload: strings without NUL, a
# timestamp that is a 64-bit integer), and a payload is kept as the exact text LINE sent. Encoding each event
# again in Python, on the process that holds the GIL for every request, was half of the writer's CPU.
# PostgreSQL's JSON functions refuse a body with a ``\u0000`` escape anywhere in it (they cannot make it text),
# so such a body's events come from Python instead (``ev``: the fields read here, and each payload as text).
_PG_BATCH_NAME = b"wizard_receiver_batch"


def _pg_batch_statement():
    """The batch statement, built with SQLAlchemy Core from the models' tables and compiled once (with its three
    parameters as libpq's positional ``$1`` received_at, ``$2`` the deliveries, ``$3`` the channels: it runs
    through libpq's own prepare, below). Each table's columns are named once: an event's in ``event`` (what
    PostgreSQL reads out of each event; payload.event_row is the same row built in Python), a delivery's in
    ``delivery``, a channel's timestamps in ``stamps``."""
    deliveries, events, channels = WebhookDelivery.__table__, WebhookEvent.__table__, Channel.__table__
    received_at = cast(literal_column("$1"), DateTime)
    d = func.json_to_recordset(cast(literal_column("$2"), JSON)).table_valued(
        column("o", Integer), column("c", Integer), column("dest", Text), column("n", Integer),
        column("body", Text), column("r", JSON), column("ev", JSON), column("q", Text),
    ).render_derived(name="d", with_types=True)
    sequence = func.pg_get_serial_sequence(literal(deliveries.name, Text), literal(deliveries.c.id.name, Text))
    batch = (select(cast(func.nextval(sequence), Integer).label("id"), d)
             .cte("batch").prefix_with("MATERIALIZED"))
    e = func.json_array_elements(
        case((batch.c.ev.is_(None), cast(batch.c.body, JSON)["events"]), else_=batch.c.ev)
    ).table_valued(column("value", JSON), with_ordinality="k").render_derived(name="e")
    value = e.c.value
    event = {
        "channel_id": batch.c.c, "delivery_id": batch.c.id,
        "webhook_event_id": value["webhookEventId"].astext, "type": value["type"].astext,
        "mode": value["mode"].astext, "timestamp": cast(value["timestamp"].astext, BigInteger),
        "source_type": value["source"]["type"].astext, "source_user_id": value["source"]["userId"].astext,
        "is_redelivery": func.coalesce(cast(batch.c.r[cast(e.c.k, Integer) - 1].astext, Boolean), false()),
        "payload": case((batch.c.ev.is_(None), value), else_=cast(value["payload"].astext, JSON)),
        "status": literal(EventStatus.PENDING.value), "attempts": literal(0), "received_at": received_at,
    }
    new_events = (postgresql.insert(events)
                  .from_select(list(event), select(*event.values()).select_from(batch).join(e, true())
                               .order_by(batch.c.o, e.c.k))
                  .on_conflict_do_nothing(index_elements=[events.c.channel_id, events.c.webhook_event_id])
                  .returning(events.c.delivery_id).cte("new_events"))
    counts = (select(new_events.c.delivery_id, cast(func.count(), Integer).label("new"))
              .group_by(new_events.c.delivery_id).cte("counts"))
    s = func.json_to_recordset(cast(literal_column("$3"), JSON)).table_valued(
        column("id", Integer), column("t", Boolean), column("e", Boolean), column("v", Boolean),
        column("r", Boolean)).render_derived(name="s", with_types=True)
    # One UPDATE for every channel column: two in one statement would each change the row once, and one be lost.
    stamps = {"last_delivery_at": s.c.t, "last_event_at": s.c.e, "last_verified_at": s.c.v,
              "redelivery_seen_at": s.c.r}
    seen = (update(channels).where(channels.c.id == s.c.id)
            .values({name: case((flag, received_at), else_=channels.c[name]) for name, flag in stamps.items()})
            .cte("seen"))
    delivery = {"channel_id": batch.c.c, "received_at": received_at, "destination": batch.c.dest,
                "event_count": batch.c.n, "new_event_count": func.coalesce(counts.c.new, 0),
                "body": batch.c.body, "request_id": batch.c.q, "id": batch.c.id}
    stored = (postgresql.insert(deliveries)
              .from_select(list(delivery), select(*delivery.values()).select_from(
                  batch.outerjoin(counts, counts.c.delivery_id == batch.c.id)))
              .returning(deliveries.c.id, deliveries.c.new_event_count).cte("stored"))
    statement = (select(stored.c.new_event_count).add_cte(seen)
                 .select_from(stored.join(batch, batch.c.id == stored.c.id)).order_by(batch.c.o))
    return str(statement.compile(dialect=postgresql.psycopg.dialect(),
                                 compile_kwargs={"literal_binds": True})).encode()


_pg_batch = []


def _pg_batch_sql():
    if not _pg_batch:
        _pg_batch.append(_pg_batch_statement())
    return _pg_batch[0]


def insert_batch_postgres(raw, deliveries, received_at, touched=(), verified=(), redelivered=(), evented=()):
    """The receiver's batch on PostgreSQL, in one prepared statement on ``raw`` (a psycopg connection in
    autocommit, used by one thread at a time).

    ``deliveries``: (channel_id, destination, body text, its events, request id) each, the body already
    checked by receiver.parse_payload and the events parsed from it; ``touched``/``verified``: channel ids whose
    last_delivery_at (and last_verified_at) become ``received_at`` (``evented``, among the touched: also
    last_event_at); ``redelivered``: channel ids whose ``redelivery_seen_at`` does. Returns how many of each
    delivery's events were new, in order.

    The rows go as two JSON texts read by ``json_to_recordset`` (one C call each to encode), and the statement
    runs through libpq itself (prepared once per connection): psycopg's cursor machinery in Python cost more
    than the rest of the batch. libpq lets go of the GIL while it waits, as psycopg does.
    """
    pgconn = raw.pgconn
    if raw not in _PREPARED:
        result = pgconn.prepare(_PG_BATCH_NAME, _pg_batch_sql())
        if result.status != pq.ExecStatus.COMMAND_OK:
            _raise_for(pgconn, result)
        _PREPARED.add(raw)
    rows = []
    for place, (channel_id, destination, body, events, request_id) in enumerate(deliveries, start=1):
        # isRedelivery per event, only for the rare delivery that has one (None reads as false for all).
        flags = [is_redelivery(event) for event in events]
        rows.append({"o": place, "c": channel_id, "dest": destination, "n": len(events), "body": body,
                     "q": request_id,
                     "r": flags if any(flags) else None,
                     "ev": [_event_fields(event) for event in events] if "\\u0000" in body else None})
    channel_ids = set(touched) | set(redelivered)
    channels = [{"id": c, "t": c in touched, "e": c in evented, "v": c in verified, "r": c in redelivered}
                for c in channel_ids]
    result = pgconn.exec_prepared(_PG_BATCH_NAME, [received_at.isoformat(" ").encode(),
                                                   json.dumps(rows, ensure_ascii=False).encode(),
                                                   json.dumps(channels).encode()])
    if result.status != pq.ExecStatus.TUPLES_OK:
        _unprepare(raw)
        _raise_for(pgconn, result)
    return [int(result.get_value(row, 0)) for row in range(result.ntuples)]


def _raise_for(pgconn, result):
    """The error psycopg would raise for ``result``, with the server's primary message only (its detail may
    quote a value from a body)."""
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection to the database was lost")
    code = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(errors="replace")
    try:
        error = psycopg.errors.lookup(code)
    except KeyError:
        error = psycopg.DatabaseError
    raise error(message)


def _event_fields(event):
    """What _PG_BATCH reads of an event, and the event as JSON text (``payload``), for a body PostgreSQL's JSON
    functions cannot read."""
    source = event.get("source") or {}
    return {"webhookEventId": event["webhookEventId"], "type": event["type"], "mode": event.get("mode"),
            "timestamp": event["timestamp"], "source": {"type": source.get("type"), "userId": source.get("userId")},
            "payload": json.dumps(event)}


# Connections that have the batch statement prepared (it lives as long as the connection).
_PREPARED = weakref.WeakSet()


def _unprepare(raw):
    """Forget the statement after a failure, so the next batch prepares it afresh (after a migration, say)."""
    if raw in _PREPARED:
        _PREPARED.discard(raw)
        if raw.pgconn.status == pq.ConnStatus.OK:
            raw.pgconn.exec_(b"DEALLOCATE " + _PG_BATCH_NAME)
