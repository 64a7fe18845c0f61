"""Identifiers shaped like LINE's, so that whatever validates real ones accepts the sandbox's too."""
import os
import secrets
import string
import time
import uuid

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def channel_id() -> str:
    # Real Channel IDs are 10 digits starting with 1 or 2 (e.g. 1657…, 2001…).
    return secrets.choice("12") + "".join(secrets.choice(string.digits) for _ in range(9))


def channel_secret() -> str:
    return secrets.token_hex(16)


def user_id() -> str:
    """A bot's or a user's ID: ``U`` and 32 hex digits."""
    return "U" + secrets.token_hex(16)


def basic_id() -> str:
    """``@`` + 3 digits + 4 lower-case letters, like ``@123abcd``."""
    return ("@" + "".join(secrets.choice(string.digits) for _ in range(3))
            + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4)))


def ulid() -> str:
    """A ULID (48-bit millisecond time + 80 random bits, Crockford base32), as ``webhookEventId`` is."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def message_id() -> str:
    return str(secrets.randbelow(9 * 10**17) + 10**17)


def reply_token() -> str:
    return secrets.token_hex(16)


def quote_token() -> str:
    return secrets.token_urlsafe(24)


def access_token() -> str:
    # Opaque to clients, as LINE says a stateless token must be treated; long like LINE's JWTs.
    return "sandbox." + secrets.token_urlsafe(48)


def request_id() -> str:
    return str(uuid.uuid4())


def read_token() -> str:
    """A ``markAsReadToken``: opaque, URL-safe, unique per message event."""
    return secrets.token_urlsafe(32)
