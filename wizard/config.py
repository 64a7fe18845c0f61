"""Configuration: defaults, then ``instance/config.py``, then ``WIZARD_*`` environment variables.

One place decides every setting so that the embedded default (SQLite in ``instance/`` and the built-in LINE
sandbox) needs nothing installed, while production states its choices explicitly in the environment.
"""
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

# Seconds before each further attempt, one table per kind of work (wizard/claims.py ``backoff``: the most
# attempts are the delays plus one; a Retry-After the other side sends wins when it asks for longer). Code, not
# settings: each is a promise a page or a doc makes (how long a message may still go out).
BACKOFF = {
    "events": (5, 30, 120, 600),  # a database failure under an event's handler; then the event is failed
    "outbox": (10, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600),  # a message LINE could not take; then dead
    "content": (5, 15, 60, 300, 900, 3600),  # a picture, video, audio or file LINE could not give; then failed
    "profile": (30, 120, 600),  # a contact's LINE profile LINE would not give; then left
    "read_mark": (10, 60),  # a read mark LINE could not take; then left
    # A multicast or broadcast chunk LINE could not take; then failed. The last try stays well inside the 24
    # hours LINE remembers a retry key (a later repeat of a chunk LINE took would be delivered twice).
    "batches": (5, 15, 60, 300, 900, 1800, 3600),
}

DEFAULTS = {
    # Where LINE calls us. The webhook URL shown to shop owners is PUBLIC_BASE_URL + /line/webhook/<token>.
    "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
    # Unset means the real LINE Platform (https://api.line.me). With SANDBOX on it points at the sandbox.
    "LINE_API_HOST": None,
    "SANDBOX_URL": "http://127.0.0.1:5001",
    # Seconds the LINE client waits for LINE before it reports a timeout.
    "LINE_TIMEOUT": 8.0,
    # The largest message content (an image, video, audio or file a user sent) the LINE client downloads.
    "LINE_CONTENT_MAX_BYTES": 20 * 1024 * 1024,
    # The most customers' pictures, videos, voice messages and files kept per shop (all its channels); once
    # full, newer ones are not kept and the conversation says so (open them in LINE's own chat).
    "LINE_CONTENT_SHOP_QUOTA_BYTES": 2 * 1024 * 1024 * 1024,
    # LINE allows 60 webhook tests an hour per channel; we keep well under it.
    "WEBHOOK_TEST_COOLDOWN": 60,
    # Bodies above this are refused with 413 before the signature is even read.
    "WEBHOOK_MAX_BYTES": 1024 * 1024,
    # Run the event worker as a thread inside the web process (the embedded default does).
    "WORKER_IN_PROCESS": False,
    # How long a cached live check stays fresh before a page asks LINE again.
    "CHECK_MAX_AGE": 60,
    # The event worker: how long a claimed event is reserved for one attempt; the longest an idle consumer
    # waits before it looks at the queue again (PostgreSQL and Redis wake it at once anyway).
    "WORKER_LEASE_SECONDS": 120,
    # LINE's rate limits per channel, shared by every consumer (outgoing/pace.py): multicast 200 requests a
    # second; broadcast (and narrowcast) 60 an hour.
    "LINE_MULTICAST_PER_SECOND": 200.0,
    "LINE_BROADCAST_PER_HOUR": 60.0,
    # A send plan's run is written this many contacts (of the channel, by id) at a time, each slice one short
    # transaction (plans/filling.py): SQLite's one write lock is never held long, and the first chunks go out
    # while the rest is written. Chunks hold 500 (LINE's most) whatever this is; the run's last may hold fewer.
    "SEND_PLAN_SLICE": 1000,
    "WORKER_POLL_SECONDS": 1.0,
    # A new friend gets the customer data form at most once in this many hours.
    "FORM_RESEND_HOURS": 24,
    # --- the customer data form (wizard/customers/) ---
    # How long a customer's form link works after it was sent (it is signed: a changed one never works).
    "FORM_LINK_DAYS": 30,
    # Submissions of the form accepted per link, and per client address (customers behind one mobile
    # carrier's address share the second); more are refused with a page that says when to try again.
    "FORM_SUBMIT_LIMIT": "5 per minute; 20 per hour",
    "FORM_SUBMIT_LIMIT_PER_ADDRESS": "30 per minute; 300 per hour",
    # Named in every form's privacy notice as the processor that keeps the data for the shop (PDPA Art. 8).
    "CRM_VENDOR_NAME": "LINE Connect Wizard CRM",
    # --- contacts and conversations (wizard/customers/contacts.py, conversation.py, replies.py) ---
    # Seconds LINE's monthly message quota is reused per channel before a page asks again; the page warns
    # from this share (percent) of the quota used.
    "QUOTA_CACHE_SECONDS": 300,
    "QUOTA_WARN_PERCENT": 80,
    # The receiver remembers a channel (and its secret) this long, sparing a query per delivery.
    "WEBHOOK_CHANNEL_CACHE_SECONDS": 10.0,
    # --- queue (wizard/queue.py) ---
    # Where the queue lives: unset = beside the app's database (a SQLite file in instance/, or the same
    # PostgreSQL); redis://… also works. QUEUE_NAME separates several apps sharing one store.
    "QUEUE_URL": None,
    "QUEUE_NAME": "wizard",
    # Threads per consumer process (``flask --app wizard worker``); each runs one task at a time.
    "WORKER_THREADS": 4,
    # A consumer has no web server: with a port, it serves its own counters (retried, dead) for Prometheus.
    "WORKER_METRICS_PORT": None,
    # --- hardening (sign-in throttling, cookies, headers) ---
    # Where the sign-in delays (wizard/throttle.py) and Flask-Limiter's limits are counted: memory:// suits
    # one process; production with several workers sets redis://[:password@]host:6379/N (rediss:// for TLS)
    # so every worker sees the same counts.
    "RATELIMIT_STORAGE_URI": "memory://",
    # A Redis that does not answer must cost a second, not a page: connect and read timeouts (seconds).
    "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
    # Stated here because Flask-Limiter remembers a previous app's choice when an app leaves it unset.
    "RATELIMIT_ENABLED": True,
    # If that storage is unreachable, limits are counted in each process until it answers again (one
    # warning, not a traceback per request), and no request fails because of it.
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    "RATELIMIT_SWALLOW_ERRORS": True,
    # Failed password checks that cost nothing, per account and client address (pair), per account from any
    # address and per address for any account; after them each failure makes the next try wait
    # SIGN_IN_FIRST_DELAY seconds, doubling, at most SIGN_IN_MAX_DELAY. Counts end SIGN_IN_FORGET_AFTER
    # seconds after a run's first failure.
    "SIGN_IN_FREE_PER_PAIR": 3,
    "SIGN_IN_FREE_PER_ACCOUNT": 10,
    "SIGN_IN_FREE_PER_ADDRESS": 20,
    "SIGN_IN_FIRST_DELAY": 5.0,
    "SIGN_IN_MAX_DELAY": 300.0,
    "SIGN_IN_FORGET_AFTER": 3600,
    # Flask's own default (None) would win over a setdefault in _derive, so these are defaults here.
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_NAME": "remember_token",  # Flask-Login's name, stated so security.py can read it
    # --- observability (logs, metrics) ---
    # "json" (one object per line on stderr) or "text" (logging left as Python and Flask set it). Unset: text
    # in the embedded default and the tests (SANDBOX or TESTING on), json everywhere else.
    "LOG_FORMAT": None,
    "LOG_LEVEL": "INFO",
    # GET /metrics: with a token, only "Authorization: Bearer <token>"; without, only loopback, not via a proxy.
    "METRICS_TOKEN": None,
    # GET /readyz gives the database and the queue this many seconds each (concurrently) before a 503.
    "READYZ_TIMEOUT": 2.0,
    # --- mail (wizard/mail.py) and invitations ---
    # Unset: every mail is written as an .eml file into instance/outbox/ (the embedded default). Otherwise
    # smtp://host:port, smtps://host:465 or smtp+starttls://user:password@host:587.
    "MAIL_URL": None,
    "MAIL_FROM": "LINE Connect Wizard <no-reply@localhost>",
    # Seconds the SMTP server may take to answer before the mail is recorded as failed.
    "MAIL_TIMEOUT": 10.0,
    # How long an invitation link works.
    "INVITATION_HOURS": 72.0,
    # --- the watch (wizard/watch/): drift checks, dormancy, alerts ---
    # Minutes between two rounds of checks of every connected shop (token, bot info, webhook endpoint: at
    # most 3 LINE calls per shop and round); LINE's webhook test and friend count run at most daily.
    "WATCH_INTERVAL_MINUTES": 15,
    # Passive evidence (refused signatures, deliveries to a shop not healthy) re-checks that shop at once, but
    # at most once per this many seconds (each re-check may ask LINE 3 calls; watch/evidence.py).
    "EVIDENCE_SPACING_SECONDS": 30.0,
    # Dormant: LINE counts at least this many new friends whose follow events never arrived, and (for
    # "silent") nothing arrived for ten of the shop's usual gaps between events, never less than these hours.
    "DORMANT_MIN_NEW_FRIENDS": 1,
    "DORMANT_AFTER_HOURS": 24.0,
    # Alerts: e-mail the owner and the assigned staff at most once a day per alert; optionally POST a signed
    # JSON (X-Wizard-Signature: HMAC-SHA256 of the body under ALERT_WEBHOOK_SECRET) to a chat tool's URL.
    "ALERT_EMAIL_HOURS": 24.0,
    # The console's check history (shop_checks) per shop: 30 days answers "since when does it fail, and what
    # did each check say" (the state changes keep the longer story); at the default round a shop makes about
    # 2,900 checks in 30 days, so the cap only bites when something checks far more often.
    "CHECK_HISTORY_DAYS": 30.0,
    "CHECK_HISTORY_PER_SHOP": 3000,
    # --- retention (wizard/retention.py, nightly; 0 keeps a kind for ever) ---
    # Days LINE's webhook events and their raw bodies are kept once run (about 1.2 GB per million), days the
    # files customers send are kept, days the record of sent e-mail is kept. The customer form's privacy
    # notice states the first two, and a customer's own data goes after the period the shop's notice states.
    "RETAIN_EVENTS_DAYS": 90.0,
    "RETAIN_MEDIA_DAYS": 365.0,
    "RETAIN_MAIL_DAYS": 365.0,
    "ALERT_WEBHOOK_URL": None,
    "ALERT_WEBHOOK_SECRET": None,
    # --- migrations (wizard/migrations/env.py) ---
    # On PostgreSQL a migration waits at most this many seconds for a table lock (a long transaction may hold
    # it; meanwhile every webhook insert would queue behind the waiting ALTER), then gives up, changes
    # nothing, and tries again after a growing pause, up to MIGRATION_ATTEMPTS times (about 4 minutes).
    "MIGRATION_LOCK_TIMEOUT": 0.5,
    "MIGRATION_ATTEMPTS": 20,
    # A file holding ENCRYPTION_KEY's value (keys separated by commas or lines), re-read by every process as
    # soon as it changes (wizard/crypto.py): how a key rotation reaches running workers. Not with ENCRYPTION_KEY.
    "ENCRYPTION_KEY_FILE": None,
    # --- server (proxy) ---
    # Proxies in front (deploy/nginx.conf) whose X-Forwarded-For/-Proto are believed; gunicorn.conf.py says 1.
    "TRUSTED_PROXIES": 0,
    # --- message templates (wizard/plans/media.py) ---
    # The folder of the templates' pictures, served at PUBLIC_BASE_URL/media/ because LINE fetches them from
    # there. None: instance/media. With several web machines, a folder they all share: any may be asked.
    "MEDIA_DIR": None,
    # Per shop at most this many bytes and pictures stored (the original and its preview count together); past
    # either, an upload is refused with a message. Pictures no template uses go by themselves (plans/media.py).
    "MEDIA_SHOP_QUOTA_BYTES": 200 * 1024 * 1024,
    "MEDIA_SHOP_MAX_PICTURES": 2000,
    # --- requests ---
    # The largest request body the app reads (Flask's own setting): a template's picture (at most 10 MB, LINE's
    # limit) with the rest of its form. Larger gets the 413 page in the visitor's language, before anything is
    # read or spooled to disk; deploy/nginx.conf lets 11 MB through on the builder's pages only.
    "MAX_CONTENT_LENGTH": 12 * 1024 * 1024,
    "BABEL_DEFAULT_LOCALE": "zh_Hant_TW",
    "BABEL_DEFAULT_TIMEZONE": "Asia/Taipei",
    "LANGUAGES": ["zh_Hant_TW", "en"],
    "WTF_CSRF_TIME_LIMIT": None,
    # hide_parameters: a database error must never print webhook bodies or secrets into the logs.
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "hide_parameters": True},
}

_BOOLEAN = {"SANDBOX", "WORKER_IN_PROCESS", "TESTING", "SESSION_COOKIE_SECURE", "RATELIMIT_ENABLED",
            "RATELIMIT_SWALLOW_ERRORS", "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"}
_NUMBER = {"LINE_TIMEOUT": float, "LINE_CONTENT_MAX_BYTES": int, "LINE_CONTENT_SHOP_QUOTA_BYTES": int,
           "WEBHOOK_TEST_COOLDOWN": int, "WEBHOOK_MAX_BYTES": int,
           "MEDIA_SHOP_QUOTA_BYTES": int, "MEDIA_SHOP_MAX_PICTURES": int, "MAX_CONTENT_LENGTH": int,
           "CHECK_MAX_AGE": int, "WORKER_LEASE_SECONDS": float, "WORKER_POLL_SECONDS": float,
           "LINE_MULTICAST_PER_SECOND": float, "LINE_BROADCAST_PER_HOUR": float, "SEND_PLAN_SLICE": int,
           "WORKER_THREADS": int, "WORKER_METRICS_PORT": int,
           "FORM_RESEND_HOURS": float, "QUOTA_CACHE_SECONDS": float, "QUOTA_WARN_PERCENT": float,
           "FORM_LINK_DAYS": float, "WEBHOOK_CHANNEL_CACHE_SECONDS": float,
           "READYZ_TIMEOUT": float, "MAIL_TIMEOUT": float, "INVITATION_HOURS": float,
           "WATCH_INTERVAL_MINUTES": float, "EVIDENCE_SPACING_SECONDS": float,
           "DORMANT_MIN_NEW_FRIENDS": int, "DORMANT_AFTER_HOURS": float,
           "ALERT_EMAIL_HOURS": float, "CHECK_HISTORY_DAYS": float, "CHECK_HISTORY_PER_SHOP": int,
           "MIGRATION_LOCK_TIMEOUT": float, "MIGRATION_ATTEMPTS": int,
           "RETAIN_EVENTS_DAYS": float, "RETAIN_MEDIA_DAYS": float, "RETAIN_MAIL_DAYS": float,
           "SIGN_IN_FREE_PER_PAIR": int, "SIGN_IN_FREE_PER_ACCOUNT": int, "SIGN_IN_FREE_PER_ADDRESS": int,
           "SIGN_IN_FIRST_DELAY": float, "SIGN_IN_MAX_DELAY": float, "SIGN_IN_FORGET_AFTER": int}


class ConfigError(RuntimeError):
    """A deployment's settings the app refuses to start with; the message says what to set."""


def _parse_bool(value):
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _instance_secret(instance_path, name, make):
    """Read a generated secret from instance/, creating it on first run (readable by the owner only)."""
    path = Path(instance_path) / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def load(app, overrides=None):
    """Fill ``app.config`` in the documented order; ``overrides`` (tests) win over everything."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    for key, value in os.environ.items():
        if not key.startswith("WIZARD_") or key == "WIZARD_TEST_DATABASE_URL":
            continue
        name = key[len("WIZARD_"):]
        if name in _BOOLEAN:
            value = _parse_bool(value)
        elif name in _NUMBER:
            value = _NUMBER[name](value)
        app.config[name] = value
    if overrides:
        app.config.update(overrides)
    _derive(app)


def _derive(app):
    """Settings that follow from others; computed once here so no module guesses them again."""
    cfg = app.config
    embedded_db = "sqlite:///" + os.path.join(app.instance_path, "wizard.db")
    cfg.setdefault("DATABASE_URL", embedded_db)
    cfg["SQLALCHEMY_DATABASE_URI"] = cfg["DATABASE_URL"]
    # The embedded default: no database server, no LINE host and no public address chosen. Any of those means
    # a real deployment, which must talk to the real LINE Platform and state its own keys.
    embedded = (cfg["DATABASE_URL"] == embedded_db and not cfg.get("LINE_API_HOST")
                and cfg["PUBLIC_BASE_URL"].rstrip("/") == DEFAULTS["PUBLIC_BASE_URL"])
    if "SANDBOX" not in cfg:
        cfg["SANDBOX"] = embedded  # the sandbox is on in the embedded default only
    if cfg["SANDBOX"] and not cfg.get("LINE_API_HOST"):
        cfg["LINE_API_HOST"] = cfg["SANDBOX_URL"]
    if not cfg.get("QUEUE_URL"):
        # Beside the database: its own SQLite file (one writer per file: the queue must not wait on the
        # events), or the same PostgreSQL, which every machine of a deployment reaches already.
        cfg["QUEUE_URL"] = ("sqlite:///" + os.path.join(app.instance_path, "huey.db")
                            if cfg["DATABASE_URL"].startswith("sqlite") else cfg["DATABASE_URL"])
    cfg.setdefault("SANDBOX_DATABASE_URL", "sqlite:///" + os.path.join(app.instance_path, "sandbox.db"))
    _keys(app, embedded)
    cfg["PUBLIC_BASE_URL"] = cfg["PUBLIC_BASE_URL"].rstrip("/")
    if cfg["PUBLIC_BASE_URL"].startswith("https://") and "WIZARD_SESSION_COOKIE_SECURE" not in os.environ:
        # Behind HTTPS the session cookie must never travel over plain http.
        cfg["SESSION_COOKIE_SECURE"] = cfg["REMEMBER_COOKIE_SECURE"] = True


def _keys(app, embedded):
    """SECRET_KEY and ENCRYPTION_KEY: generated into instance/ in the embedded default only.

    Anywhere else a missing key is an error at start (issue 14, item 21): a machine with a key of its own signs
    links no other machine accepts and cannot read the channel secrets the others stored, so every webhook
    would answer 500 while the machine looked healthy."""
    cfg = app.config
    if cfg.get("ENCRYPTION_KEY_FILE"):
        if cfg.get("ENCRYPTION_KEY"):
            raise ConfigError("Set WIZARD_ENCRYPTION_KEY or WIZARD_ENCRYPTION_KEY_FILE, not both.")
        from . import crypto
        try:
            cfg["ENCRYPTION_KEY"] = ",".join(crypto.read_key_file(cfg["ENCRYPTION_KEY_FILE"], at_start=True))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"WIZARD_ENCRYPTION_KEY_FILE ({cfg['ENCRYPTION_KEY_FILE']}) cannot be used: "
                              f"{type(exc).__name__}: it must hold Fernet keys, separated by commas or "
                              "lines.") from None
    missing = [f"WIZARD_{name}" for name in ("SECRET_KEY", "ENCRYPTION_KEY") if not cfg.get(name)]
    if missing and not embedded:
        raise ConfigError(
            f"{' and '.join(missing)} not set. Outside the embedded default every machine must use the "
            "deployment's own keys (README: Production, Deploying); the app does not start with keys of its "
            "own, which could not read what the other machines stored.")
    if not cfg.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = _instance_secret(app.instance_path, "secret_key", lambda: secrets.token_hex(32))
    if not cfg.get("ENCRYPTION_KEY"):
        cfg["ENCRYPTION_KEY"] = _instance_secret(
            app.instance_path, "encryption_key", lambda: Fernet.generate_key().decode()
        )
    for number, key in enumerate(cfg["ENCRYPTION_KEY"].replace("\n", ",").split(","), start=1):
        if key.strip():
            try:
                Fernet(key.strip().encode())
            except ValueError:
                raise ConfigError(f"Key {number} of WIZARD_ENCRYPTION_KEY is not a Fernet key (32 url-safe "
                                  "base64-encoded bytes).") from None
