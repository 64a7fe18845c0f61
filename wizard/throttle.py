"""Password guessing is slowed down, the owner is not locked out: a short, growing delay after failed
password checks (sign-in, and the current password on the password change page).

What a fixed "N an hour" limit got wrong: twenty wrong tries refused the right password for the rest of the
hour, and one address's failures locked out every account behind it (an office, a load balancer). Here each
failure only sets how long the next try must wait, and once that wait has passed the right password is let in:

- per account and client address (the pair): ``SIGN_IN_FREE_PER_PAIR`` failures cost nothing, then each one
  makes the next try wait ``SIGN_IN_FIRST_DELAY`` seconds, doubling, at most ``SIGN_IN_MAX_DELAY``;
- per account from any address (many machines guessing one password) and per address for any account (one
  machine guessing many accounts) the same, from ``SIGN_IN_FREE_PER_ACCOUNT`` and ``SIGN_IN_FREE_PER_ADDRESS``
  failures. A browser that has signed in to the account before carries a signed cookie saying so (``known``),
  and only its pair's delay applies to it: nobody elsewhere can delay the owner at their usual browser.

Failures are forgotten ``SIGN_IN_FORGET_AFTER`` seconds after the first of a run; a right password clears its
pair's. While a delay runs, a try is refused before its password is looked at, right or wrong. A try is counted
before its password is checked, and past the free ones only one try at a time passes a key (a claim), so
parallel requests cannot spend one free moment many times. Staff can
lift an account's delays (``lift``: the people page, ``flask --app wizard user unlock``); for an hour after,
that account's tries skip the address-wide delay.

The counts live in ``RATELIMIT_STORAGE_URI`` (Redis for several processes), keyed by hashes, so the store
holds no addresses. If that store does not answer, the counts move into this process until it does again
(``Counts``): throttling goes on, one warning is logged per outage, and nobody gets an error page.
"""
import hashlib
import logging
import threading
import time

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from limits.storage import MemoryStorage, storage_from_string

from . import accounts

log = logging.getLogger(__name__)

KNOWN_COOKIE = "known_device"
KNOWN_MAX_ACCOUNTS = 5
CLAIM_SECONDS = 30  # longer than any password check; a crashed request's claim ends by itself
RETRY_PRIMARY_SECONDS = 30


class Throttled(Exception):
    """The try must wait ``seconds`` more; nothing was checked."""

    def __init__(self, seconds):
        super().__init__(seconds)
        self.seconds = max(1, int(seconds + 0.999))


class Counts:
    """The store of counters: the configured one, or this process's memory while it is unreachable.

    One warning when the configured store fails (not a traceback per request), one line when it answers
    again; meanwhile every operation uses the in-process store, so limits still hold within each process."""

    def __init__(self, uri, options=None):
        self.uri = uri
        self.primary = storage_from_string(uri, **(options or {}))
        self.fallback = MemoryStorage()
        self.down_since = None
        self._lock = threading.Lock()

    def _store(self):
        if self.down_since is None or isinstance(self.primary, MemoryStorage):
            return self.primary
        if time.monotonic() - self.down_since < RETRY_PRIMARY_SECONDS:
            return self.fallback
        return self.primary  # time to try it again

    def _call(self, name, *args):
        store = self._store()
        try:
            result = getattr(store, name)(*args)
        except Exception as exc:  # noqa: BLE001  (a store's driver raises its own errors: redis, socket …)
            if store is self.fallback:
                raise
            with self._lock:
                first = self.down_since is None
                self.down_since = time.monotonic()
            if first:
                log.warning("sign-in throttle: the store %s does not answer (%s: %s); counting in this "
                            "process until it does", _safe_uri(self.uri), type(exc).__name__, exc)
            return getattr(self.fallback, name)(*args)
        if store is self.primary and self.down_since is not None:
            with self._lock:
                self.down_since = None
            log.warning("sign-in throttle: the store %s answers again", _safe_uri(self.uri))
        return result

    def get(self, key):
        return self._call("get", key)

    def incr(self, key, expiry, amount=1):
        return self._call("incr", key, max(1, int(expiry)), amount)

    def clear(self, key):
        return self._call("clear", key)

    def expiry(self, key):
        return self._call("get_expiry", key)


def _safe_uri(uri):
    """The store's address without its password (redis://:secret@host → redis://…@host)."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}…@{rest.rpartition('@')[2]}" if "@" in rest else uri


_made = threading.Lock()


def counts():
    """The app's ``Counts``, made on first use; once per app even when a burst of first requests arrives
    together (each with its own store, every one of them would be let through)."""
    app = current_app._get_current_object()
    store = app.extensions.get("sign_in_throttle")
    if store is None:
        with _made:
            store = app.extensions.get("sign_in_throttle")
            if store is None:
                store = app.extensions["sign_in_throttle"] = Counts(app.config["RATELIMIT_STORAGE_URI"],
                                                                    app.config.get("RATELIMIT_STORAGE_OPTIONS"))
    return store


def _hash(*parts):
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def account_key(email):
    return _hash("account", accounts.normalise_email(email))


class _Key:
    """One counted thing (pair, account or address): its failures, its running delay and its claim."""

    def __init__(self, store, name, free):
        self.store, self.name, self.free = store, name, free

    def delay_after(self, failures):
        config = current_app.config
        if failures <= self.free:
            return 0
        return min(float(config["SIGN_IN_MAX_DELAY"]),
                   float(config["SIGN_IN_FIRST_DELAY"]) * 2 ** min(failures - self.free - 1, 30))

    def waiting(self):
        """Seconds until the next try may pass (0: now)."""
        if self.store.get("wait:" + self.name) <= 0:
            return 0
        return max(0.0, self.store.expiry("wait:" + self.name) - time.time())

    def start_delay(self, failures):
        """After the ``failures``-th failure: the next try waits (returns the seconds, 0 for none)."""
        delay = self.delay_after(failures)
        if delay:
            self.store.clear("wait:" + self.name)
            self.store.incr("wait:" + self.name, delay)
        return delay

    def reset(self):
        for prefix in ("fail:", "wait:", "claim:"):
            self.store.clear(prefix + self.name)


class Attempt:
    """One password check under the throttle: ``attempt`` begins it, then call ``failed`` or ``succeeded``.

    Each try is counted as a failure before its password is checked, and given back if it was right (or
    refused): parallel requests each get their own number at once, so a burst spends the free tries and then
    one at a time, never one free moment many times."""

    def __init__(self, email, address, known):
        config = current_app.config
        self.store = counts()
        account = account_key(email)
        generation = str(self.store.get("generation:" + account))  # lifting the account starts a new one
        self.pair = _Key(self.store, _hash("pair", account, generation, address or ""),
                         int(config["SIGN_IN_FREE_PER_PAIR"]))
        self.keys = [self.pair]
        if not known:
            self.keys.append(_Key(self.store, account, int(config["SIGN_IN_FREE_PER_ACCOUNT"])))
            # After staff lifted the account's delay, its tries skip the address's delay for an hour (the owner
            # may be behind an address someone else made wait); the account's own count starts again.
            if self.store.get("lifted:" + account) <= 0:
                self.keys.append(_Key(self.store, _hash("address", address or ""),
                                      int(config["SIGN_IN_FREE_PER_ADDRESS"])))
        self.account = account
        self.counted = []  # (key, this try's number among its failures)
        self.claimed = []

    def begin(self):
        """Raises ``Throttled`` while a delay runs (or another try on the same delayed key is being checked)."""
        forget = current_app.config["SIGN_IN_FORGET_AFTER"]
        for key in self.keys:
            number = self.store.incr("fail:" + key.name, forget)
            self.counted.append((key, number))
            if number <= key.free:
                continue  # a free try
            # One try at a time past the free ones: claim first, then look at the delay (a try that ends in
            # between has set its delay before it gave the claim back).
            if self.store.incr("claim:" + key.name, CLAIM_SECONDS) != 1:
                self._give_back([key for key, _number in self.counted])
                raise Throttled(1)
            self.claimed.append(key)
            wait = key.waiting()
            if wait:
                self._give_back([key for key, _number in self.counted])
                raise Throttled(wait)
        return self

    def failed(self):
        """The try failed (it is counted already); returns the seconds the next try must wait (0: none)."""
        delays = [key.start_delay(number) for key, number in self.counted]
        delay = max(delays)
        if delay:
            # What the staff page shows: this account has a delay running, until when.
            marker = "delayed:" + self.account
            if self.store.get(marker) <= 0 or self.store.expiry(marker) < time.time() + delay:
                self.store.clear(marker)
                self.store.incr(marker, delay)
        self._release()
        return delay

    def succeeded(self):
        """The right password: this pair starts again from nothing, and the other counts get this try back."""
        self.pair.reset()
        self._give_back([key for key, _number in self.counted if key is not self.pair])

    def _give_back(self, keys):
        for key in keys:
            self.store.incr("fail:" + key.name, 1, amount=-1)
        self._release()

    def _release(self):
        for key in self.claimed:
            self.store.clear("claim:" + key.name)
        self.claimed = []


def attempt(email, address, known=False):
    """A started ``Attempt``; raises ``Throttled``."""
    return Attempt(email, address, known).begin()


def delayed_until(email):
    """When the longest delay running for this account ends (time.time() seconds), or None."""
    store = counts()
    marker = "delayed:" + account_key(email)
    if store.get(marker) <= 0:
        return None
    until = store.expiry(marker)
    return until if until > time.time() else None


def lift(email):
    """End every delay of this account (all its pairs, and the account's own); returns whether one ran."""
    store = counts()
    account = account_key(email)
    running = delayed_until(email) is not None
    # Kept far longer than any count it outdates, so an old pair's counts never come back.
    store.incr("generation:" + account, 30 * 86400)
    for prefix in ("fail:", "wait:", "claim:", "delayed:", "lifted:"):
        store.clear(prefix + account)
    store.incr("lifted:" + account, 3600)
    return running


def lift_address(address):
    """End the delay of one client address (all accounts tried from it); returns whether one ran."""
    key = _Key(counts(), _hash("address", address), 0)
    running = bool(key.waiting())
    key.reset()
    return running


# --- the browser's "signed in here before" cookie ---

def _serializer():
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="known-device")


def known_accounts(request):
    try:
        value = _serializer().loads(request.cookies.get(KNOWN_COOKIE, ""))
    except BadSignature:
        return []
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def remember_device(response, request, email):
    """After a right password: this browser is known for this account (kept a year, up to 5 accounts)."""
    account = account_key(email)
    known = [account] + [item for item in known_accounts(request) if item != account]
    config = current_app.config
    response.set_cookie(KNOWN_COOKIE, _serializer().dumps(known[:KNOWN_MAX_ACCOUNTS]), max_age=365 * 86400,
                        httponly=True, samesite="Lax", secure=bool(config.get("SESSION_COOKIE_SECURE")))
    return response
