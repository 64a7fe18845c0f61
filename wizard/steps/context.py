"""What every step's check works with: ``StepResult`` (a step's verdict) and ``Context`` (one evaluation).

Only ``Context`` calls LINE, and it calls each LINE endpoint at most once per evaluation, so checking every
step costs one token, one bot-info and one webhook-endpoint request at most.
"""
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from flask import current_app

from ..extensions import db
from ..line.client import client_for
from ..line.problems import MESSAGES as LINE_MESSAGES, LineProblem, reference as problem_reference
from ..line.store import DELIVERY_TIME_RESOLUTION
from ..models import WebhookEvent, WebhookRejection, iso_utc, utcnow
from .state import State

# Problems that mean "we could not ask LINE just now" rather than "something is set wrong".
TRANSIENT = {"line_unreachable", "timeout", "rate_limited", "line_error"}
REAL_LINE_HOSTS = {None, "", "https://api.line.me"}


@dataclass
class StepResult:
    key: str
    state: State
    reason: str
    detail: dict = field(default_factory=dict)
    checked_at: datetime = field(default_factory=utcnow)
    # False for what only the owner can confirm: it never keeps a shop from counting as connected.
    blocks: bool = True
    # The step whose page fixes this one (another step, when this one waits for it); None: this step itself.
    fix: str | None = None

    def __post_init__(self):
        self.state = State(self.state)

    @property
    def fix_key(self):
        return self.fix or self.key

    @property
    def done(self):
        return self.state == State.DONE

    @property
    def satisfied(self):
        """Good enough for the steps that depend on it (and for "connected")."""
        return self.state == State.DONE or not self.blocks

    @property
    def message(self):
        from .reasons import describe
        return describe(self.reason, self.detail, fix=self.fix)

    @property
    def reference(self):
        """For a LINE problem that is not the owner's to fix: what to pass on to staff (they find it in the
        logs, see ``line.problems.reference``)."""
        if self.reason not in TRANSIENT:
            return None
        return problem_reference(self.reason, self.detail.get("status"), self.checked_at)

    @property
    def hint(self):
        """What to do about a LINE problem (the other reasons' sentences already say it)."""
        return str(LINE_MESSAGES[self.reason][1]) if self.reason in LINE_MESSAGES else None


class Context:
    """One evaluation of one shop: memoises LINE answers and earlier steps' results."""

    def __init__(self, shop):
        self.shop = shop
        self.channel = shop.channel
        self.results = {}
        self._memo = {}
        self._client = None

    def client(self):
        if self._client is None:
            self._client = client_for(self.channel)
        return self._client

    def ask(self, name, call):
        """Run a LINE call once; a LineProblem is remembered and raised again for later askers."""
        if name not in self._memo:
            try:
                self._memo[name] = ("ok", call())
            except LineProblem as problem:
                self._memo[name] = ("problem", problem)
        kind, value = self._memo[name]
        if kind == "problem":
            raise value
        return value

    def bot_info(self):
        return self.ask("bot_info", lambda: self.client().verify_credentials())

    def endpoint(self):
        return self.ask("endpoint", lambda: self.client().get_webhook_endpoint())

    def unmet(self, *keys):
        """The first of these (already evaluated) steps that is not good enough yet, or None."""
        for key in keys:
            result = self.results.get(key)
            if result is not None and not result.satisfied:
                return result
        return None

    def waiting_for(self, key, blocker):
        """``key``'s verdict while ``blocker`` (a step it depends on) is not right: fix that step first.

        A step that could not be checked makes its dependants uncheckable too, with the same reason."""
        if blocker.state == State.UNVERIFIABLE:
            # Nothing to fix anywhere: the same "could not ask LINE", and "check again" on any page.
            return StepResult(key, State.UNVERIFIABLE, blocker.reason, dict(blocker.detail))
        return StepResult(key, State.TODO, "fix_step_first", {"blocker_reason": blocker.reason},
                          fix=blocker.fix_key)

    def last_event_since_connected(self):
        """The newest event LINE delivered on this connection: passive proof that LINE calls our URL."""
        return latest_event(self.channel, since=self.channel.connected_at)


def latest_event(channel, type_=None, since=None, column=None):
    """The newest event the receiver stored for ``channel`` (of one type, from one LINE user, received after
    ``since``), processed or not yet; with ``column``, only that column of it."""
    query = db.select(column if column is not None else WebhookEvent).where(WebhookEvent.channel_id == channel.id)
    if type_ is not None:
        query = query.where(WebhookEvent.type == type_, WebhookEvent.source_user_id.is_not(None))
    if since is not None:
        query = query.where(WebhookEvent.received_at >= since)
    return db.session.scalar(query.order_by(WebhookEvent.id.desc()).limit(1))


def problem_result(key, problem, fix=None):
    state = State.UNVERIFIABLE if problem.code in TRANSIENT else State.ACTION
    return StepResult(key, state, problem.code, {"status": problem.status}, fix=fix)


def public_url_problem():
    """Why LINE would refuse PUBLIC_BASE_URL, or None. Against the sandbox, loopback http is allowed."""
    url = current_app.config["PUBLIC_BASE_URL"]
    if current_app.config["LINE_API_HOST"] not in REAL_LINE_HOSTS:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "public_url_not_https"
    host = (parts.hostname or "").lower()
    if host in {"localhost", ""} or host.endswith((".local", ".localhost", ".internal")):
        return "public_url_not_public"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if address.is_global else "public_url_not_public"


# A run of refused signatures this long, with no valid delivery since its first, is LINE signing with another
# secret; one or two are noise (anyone who knows the URL can POST to it).
SIGNATURE_STREAK = 3


@dataclass
class SignatureRefusals:
    """The deliveries refused for their signature in a row on this connection, none accepted since."""
    count: int
    first_at: datetime
    last_at: datetime

    def detail(self):
        return {"count": self.count, "first_at": iso_utc(self.first_at), "last_at": iso_utc(self.last_at)}


def signature_refusals(channel, at_least=SIGNATURE_STREAK):
    """The current run of ``bad_signature`` refusals when it has at least ``at_least`` of them, else None.

    The run (WebhookRejection.streak, kept by line/store.count_rejection) starts again after a valid delivery
    or a new connection; one that began before this connection, or was followed by a valid delivery (a
    verification included), is over."""
    row = db.session.scalar(db.select(WebhookRejection).where(
        WebhookRejection.channel_id == channel.id,
        # A missing signature is not LINE (LINE always signs); a wrong one from a steady caller is.
        WebhookRejection.reason == "bad_signature"))
    if row is None or row.streak_since is None or (row.streak or 0) < at_least:
        return None
    if row.streak_since < channel.connected_at:
        return None
    if (channel.last_delivery_at is not None
            and channel.last_delivery_at + DELIVERY_TIME_RESOLUTION > row.streak_since):
        return None  # LINE delivered (as far as the once-a-second record can tell) after the run began
    return SignatureRefusals(row.streak, row.streak_since, row.last_at)
