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


def rotate_stored(session, metadata):
    """Re-encrypt every stored secret under the first key, in the caller's transaction (the caller commits).

    Returns {"table.column": count}. Reads everything before writing anything: if any value cannot be
    decrypted, raises SecretsUnreadable and has changed nothing. Rows are locked while read (PostgreSQL), so
    a secret saved meanwhile is not overwritten with its old value."""
    fernet, plan, unreadable = _fernet(), [], []
    for table, column in encrypted_columns(metadata):
        (pk,) = table.primary_key.columns
        rows = session.execute(select(pk, column).where(column.is_not(None)).with_for_update()).all()
        for row_id, token in rows:
            try:
                plan.append((table, column, pk, row_id, fernet.rotate(token.encode()).decode()))
            except InvalidToken:
                unreadable.append((table.name, column.name, row_id))
    if unreadable:
        raise SecretsUnreadable(unreadable)
    counts = {f"{table.name}.{column.name}": 0 for table, column in encrypted_columns(metadata)}
    for table, column, pk, row_id, token in plan:
        session.execute(update(table).where(pk == row_id).values({column.name: token}))
        counts[f"{table.name}.{column.name}"] += 1
    return counts


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
