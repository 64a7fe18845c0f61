"""Race-safe inserts both databases speak: ``INSERT … ON CONFLICT DO NOTHING``, picked per dialect.

Bottom-level (models and the session only), because every layer writes rows this way: the receiver and the
quarantine (events), the CRM (contacts, notices, content rows), the outgoing core (outbox rows), the queue
(``periodic_runs``) and the consumers' heartbeat. A conflicting row is skipped by the database itself, so a
concurrent duplicate cannot surface as an IntegrityError and become a 500.
"""
from flask_babel import ngettext
from sqlalchemy.dialects import postgresql, sqlite

from .extensions import db

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def dialect_insert(model):
    name = db.session.get_bind().dialect.name
    try:
        return _INSERTS[name](model)
    except KeyError:  # pragma: no cover - only the two supported databases are configured
        raise RuntimeError(f"unsupported database dialect {name!r}") from None


_statements = {}


def _insert_ignoring_statement(dialect, model, conflict_columns, returning):
    key = (dialect, model, tuple(conflict_columns), returning)
    stmt = _statements.get(key)
    if stmt is None:
        table = model.__table__
        stmt = _INSERTS[dialect](table).on_conflict_do_nothing(index_elements=conflict_columns)
        if returning is not None:
            stmt = stmt.returning(table.c[returning])
        stmt = _statements.setdefault(key, stmt)
    return stmt


def insert_ignoring(model, rows, conflict_columns, returning=None, connection=None):
    """INSERT ``rows``, silently skipping any that collide on ``conflict_columns``.

    With ``returning`` (a column name), returns that column's value for each row actually inserted. The
    statement is built once per process and runs on ``connection`` (default: the session's) without ORM
    bookkeeping: the receiver runs this on every delivery, where building it anew cost more than the SQL.
    """
    if not rows:
        return []
    connection = connection if connection is not None else db.session.connection()
    stmt = _insert_ignoring_statement(connection.dialect.name, model, conflict_columns, returning)
    result = connection.execute(stmt, rows[0] if len(rows) == 1 else rows)
    return list(result.scalars()) if returning is not None else []


def one_page(query, page, per_page, refuse):
    """One page of ``query`` (``db.paginate``) and the number of pages (at least 1); a page past the last raises
    ``refuse(message)`` with the message in the user's language, so every list says it in the same words."""
    found = db.paginate(query, page=page, per_page=per_page, max_per_page=per_page, error_out=False)
    pages = max(1, found.pages)
    if page > pages:
        raise refuse(ngettext("There is no page %(page)s: the list has %(num)d page.",
                              "There is no page %(page)s: the list has %(num)d pages.", pages, page=page))
    return found, pages
