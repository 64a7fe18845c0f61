"""Secrets at rest and random tokens.

Channel secrets are encrypted with Fernet (AES-128-CBC + HMAC) under ``ENCRYPTION_KEY`` so a copy of the
database alone does not reveal them. Only this module knows the key; everything else sees plain values.

``ENCRYPTION_KEY`` may list several keys, comma-separated (MultiFernet): the first encrypts, every one
decrypts. That is how a key is replaced without losing a secret: put the new key first and keep the old one
after it, run ``flask rotate-key`` (``rotate_stored``) so every stored value is encrypted under the new key,
then drop the old one. Encrypted columns are found by their name ending in ``_encrypted``, so a new one is
rotated too without anyone remembering to list it.

With ``ENCRYPTION_KEY_FILE`` the keys live in a file that every process re-reads as soon as it changes (one
``stat`` per use). A rotation then reaches every running web worker and consumer without a restart: gunicorn's
``kill -USR2`` re-executes with the environment it was first started with, so a changed environment variable
would reach no new worker that way (issue 14, item 11).
"""
import hashlib
import logging
import os
import secrets
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app
from sqlalchemy import select, update


class SecretUnreadable(Exception):
    """The stored secret was encrypted under another key (ENCRYPTION_KEY changed)."""


class SecretsUnreadable(Exception):
    """Rotation found values no key can decrypt; ``where`` lists them as (table, column, primary key)."""

    def __init__(self, where):
        super().__init__(where)
        self.where = where


log = logging.getLogger(__name__)
_key_files = {}  # path -> ((inode, mtime, size), keys): what each key file said when it last changed
_key_files_lock = threading.Lock()


def keys(value=None):
    """The configured keys, current one first (surrounding spaces and empty entries ignored)."""
    if value is None:
        if current_app.config["ENCRYPTION_KEY_FILE"]:
            return list(read_key_file(current_app.config["ENCRYPTION_KEY_FILE"]))
        value = current_app.config["ENCRYPTION_KEY"]
    return [key.strip() for key in value.replace("\n", ",").split(",") if key.strip()]


def read_key_file(path, *, at_start=False):
    """The keys in ``path``, read again whenever the file changed since the last call.

    Raises OSError or ValueError on the first read (or ``at_start``) of an unreadable or empty file. Later, a
    file that became unreadable or empty (written in place rather than replaced with ``mv``) keeps the last
    keys read and logs it: a half-written file must not take the webhooks down."""
    try:
        stat = os.stat(path)
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except OSError:
        signature = None
    with _key_files_lock:
        cached = None if at_start else _key_files.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        try:
            with open(path, encoding="utf-8") as handle:
                found = tuple(keys(handle.read()))
            if not found:
                raise ValueError(f"{path} holds no key")
            for key in found:
                Fernet(key.encode())
        except (OSError, ValueError) as exc:
            if cached is None:
                raise
            log.error("ENCRYPTION_KEY_FILE could not be read again (%s); keeping the keys read before",
                      type(exc).__name__)
            return cached[1]
        if cached is not None:
            log.info("ENCRYPTION_KEY_FILE changed: now %d key(s)", len(found))
        _key_files[path] = (signature, found)
        return found


def _fernet():
    return MultiFernet([Fernet(key.encode()) for key in keys()])


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("stored secret cannot be decrypted with ENCRYPTION_KEY") from exc


def rotate(token: str) -> str:
    """The same secret encrypted under the current (first) key; raises SecretUnreadable."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("stored secret cannot be decrypted with ENCRYPTION_KEY") from exc


def encrypted_columns(metadata):
    """Every (table, column) holding values of ``encrypt``: by convention, columns named ``*_encrypted``."""
    return [(table, column) for table in metadata.sorted_tables for column in table.columns
            if column.name.endswith("_encrypted")]


# rotate_stored writes this many rows per transaction.
ROTATE_CHUNK = 100


def rotate_stored(session, metadata, chunk=ROTATE_CHUNK):
    """Re-encrypt every stored secret under the first key; returns {"table.column": count}.

    Reads everything before writing anything: if any value cannot be decrypted, raises SecretsUnreadable and
    has changed nothing. Then writes in short transactions of at most ``chunk`` rows, each row only if it still
    holds the value read (compare and set); a row changed meanwhile (a secret saved) is read again and rotated
    from what it holds now, so it is never overwritten with its old value.

    Why not one transaction over rows locked while read (as before): the receiver writes a channel's
    ``last_delivery_at`` in the same statement as its deliveries, so while rotate-key held the channels' rows,
    up to its one commit after every contact's form token, every webhook of every worker waited for it (for a
    shop with thousands of contacts, longer than LINE's 2 s). A rotation stopped half-way leaves every value
    readable (the new key and the old are both set until it is done); running it again finishes it."""
    fernet, plans, unreadable = _fernet(), {}, []
    for table, column in encrypted_columns(metadata):
        (pk,) = table.primary_key.columns
        plan = plans[table, column] = []
        for row_id, token in session.execute(select(pk, column).where(column.is_not(None))).all():
            try:
                plan.append((row_id, token, fernet.rotate(token.encode()).decode()))
            except InvalidToken:
                unreadable.append((table.name, column.name, row_id))
    session.rollback()  # the reads' transaction (no locks were taken), so none stays open while writing
    if unreadable:
        raise SecretsUnreadable(unreadable)
    counts = {}
    for (table, column), plan in plans.items():
        (pk,) = table.primary_key.columns
        counts[f"{table.name}.{column.name}"] = 0
        # One table per transaction too: a channel's row is never held while a contact's is waited for.
        for start in range(0, len(plan), chunk):
            for row_id, old, new in plan[start:start + chunk]:
                counts[f"{table.name}.{column.name}"] += _rotate_row(session, fernet, column, pk, row_id, old, new)
            session.commit()
    return counts


def _rotate_row(session, fernet, column, pk, row_id, old, new, attempts=5):
    """Write ``new`` where the row still holds ``old``; if it holds another value now, rotate that one.
    False when the row or its value is gone meanwhile (nothing to rotate)."""
    table = column.table
    for _ in range(attempts):
        if session.execute(update(table).where(pk == row_id, column == old).values({column.name: new})).rowcount:
            return True
        old = session.execute(select(column).where(pk == row_id)).scalar()
        if old is None:
            return False
        try:
            new = fernet.rotate(old.encode()).decode()
        except InvalidToken:  # written meanwhile by a process with other keys: left as it is, and said
            log.warning("rotate-key: %s.%s id %s changed meanwhile to a value no key here reads; left as it is",
                        table.name, column.name, row_id)
            return False
    raise RuntimeError(f"{table.name}.{column.name} id {row_id} kept changing while it was rotated; "
                       "run rotate-key again")


def new_token(nbytes: int = 24) -> str:
    """A URL-safe random token; 24 bytes = 192 bits, above the 128 bits a webhook token needs."""
    return secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    """API tokens are stored as SHA-256 digests: they are long random values, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def mask(secret: str | None) -> str:
    """What a page may show of a secret: enough to recognise it, never enough to use it."""
    if not secret:
        return ""
    return "•" * 8 + secret[-4:]
