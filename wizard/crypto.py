"""Secrets at rest and random tokens.

Channel secrets are encrypted with Fernet (AES-128-CBC + HMAC) under ``ENCRYPTION_KEY`` so a copy of the
database alone does not reveal them. Only this module knows the key; everything else sees plain values.
"""
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app


class SecretUnreadable(Exception):
    """The stored secret was encrypted under another key (ENCRYPTION_KEY changed)."""


def _fernet():
    return Fernet(current_app.config["ENCRYPTION_KEY"].encode())


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("stored secret cannot be decrypted with ENCRYPTION_KEY") from exc


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
