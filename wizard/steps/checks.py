"""The checks behind each wizard step. Each takes a ``Context`` and returns a ``StepResult``.

Only ``Context`` calls LINE, and it calls each LINE endpoint at most once per evaluation, so checking all
seven steps costs one token, one bot-info and one webhook-endpoint request at most.
"""
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo
from urllib.parse import urlsplit

from flask import current_app

from ..crypto import SecretUnreadable
from ..extensions import db
from ..line.client import client_for
from ..line.connection import remember_bot_info, webhook_url
from ..line.problems import LineProblem
from ..line.store import event_time
from ..models import Contact, WebhookEvent, WebhookRejection, iso_utc, utcnow

TODO, DONE, ACTION, UNVERIFIABLE = "todo", "done", "action_needed", "unverifiable"
# Problems that mean "we could not ask LINE just now" rather than "something is set wrong".
TRANSIENT = {"line_unreachable", "timeout", "rate_limited", "line_error"}
REAL_LINE_HOSTS = {None, "", "https://api.line.me"}


@dataclass
class StepResult:
    key: str
    state: str
    reason: str
    detail: dict = field(default_factory=dict)
    checked_at: datetime = field(default_factory=utcnow)
    # False for what only the owner can confirm: it never keeps a shop from counting as connected.
    blocks: bool = True

    @property
    def message(self):
        from .reasons import describe
        return describe(self.reason, self.detail)

    @property
    def hint(self):
        """What to do about a LINE problem (the other reasons' sentences already say it)."""
        from ..line.problems import MESSAGES
        return str(MESSAGES[self.reason][1]) if self.reason in MESSAGES else None


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


def _problem_result(key, problem):
    state = UNVERIFIABLE if problem.code in TRANSIENT else ACTION
    return StepResult(key, state, problem.code, {"status": problem.status})


def _confirmed(shop, what):
    return bool((shop.confirmations or {}).get(what))


def check_prepare(ctx):
    if not ctx.shop.line_module_enabled:
        return StepResult("prepare", ACTION, "module_disabled")
    if _confirmed(ctx.shop, "line_login"):
        return StepResult("prepare", DONE, "owner_confirmed", blocks=False)
    return StepResult("prepare", TODO, "not_confirmed", blocks=False)


def check_create_account(ctx):
    channel = ctx.channel
    credentials = ctx.results.get("credentials")
    if channel is not None and credentials is not None and credentials.state == DONE:
        claimed = (ctx.shop.claimed_basic_id or "").lstrip("@").lower()
        actual = (channel.basic_id or "").lstrip("@").lower()
        if claimed and actual and claimed != actual:
            return StepResult("create_account", ACTION, "basic_id_mismatch",
                              {"claimed": "@" + claimed, "actual": channel.basic_id})
        return StepResult("create_account", DONE, "account_found",
                          {"name": channel.display_name, "basic_id": channel.basic_id})
    if _confirmed(ctx.shop, "account_created"):
        return StepResult("create_account", DONE, "owner_confirmed", blocks=False)
    return StepResult("create_account", TODO, "not_confirmed", blocks=False)


def check_enable_messaging_api(ctx):
    credentials = ctx.results["credentials"]
    if credentials.state == DONE:
        return StepResult("enable_messaging_api", DONE, "credentials_verified")
    return StepResult("enable_messaging_api", TODO, "awaiting_credentials")


def check_credentials(ctx):
    if ctx.channel is None:
        return StepResult("credentials", TODO, "no_credentials")
    try:
        info = ctx.bot_info()
    except SecretUnreadable:
        return StepResult("credentials", ACTION, "secret_unreadable")
    except LineProblem as problem:
        return _problem_result("credentials", problem)
    remember_bot_info(ctx.channel, info)
    return StepResult("credentials", DONE, "credentials_verified",
                      {"name": info.get("displayName"), "basic_id": info.get("basicId")})


def public_url_problem():
    """Why LINE would refuse PUBLIC_BASE_URL, or None. Against the sandbox, loopback http is allowed."""
    url = current_app.config["PUBLIC_BASE_URL"]
    if current_app.config.get("LINE_API_HOST") not in REAL_LINE_HOSTS:
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


def _needs_credentials(key, ctx):
    credentials = ctx.results["credentials"]
    if credentials.state == DONE:
        return None
    if credentials.state == UNVERIFIABLE:
        return StepResult(key, UNVERIFIABLE, credentials.reason, credentials.detail)
    if ctx.channel is not None:
        return StepResult(key, TODO, "credentials_failing")
    return StepResult(key, TODO, "no_credentials")


def _signature_rejected_since_last_delivery(channel):
    last = db.session.scalar(db.select(WebhookRejection).where(
        WebhookRejection.channel_id == channel.id,
        # A missing signature is not LINE (LINE always signs); a wrong one from a steady caller is.
        WebhookRejection.reason == "bad_signature",
    ).order_by(WebhookRejection.last_at.desc()))
    if last is None or last.last_at < channel.connected_at:
        return None
    if channel.last_delivery_at and channel.last_delivery_at > last.last_at:
        return None
    return last


def _secret_reissued(channel):
    rejected = _signature_rejected_since_last_delivery(channel)
    if rejected is None:
        return None
    return StepResult("webhook_url", ACTION, "secret_reissued",
                      {"count": rejected.count, "last_at": iso_utc(rejected.last_at)})


def check_webhook_url(ctx):
    # Before anything else: no URL we could show would be accepted by LINE.
    url_problem = public_url_problem()
    if url_problem:
        return StepResult("webhook_url", ACTION, url_problem, {"url": current_app.config["PUBLIC_BASE_URL"]})
    waiting = _needs_credentials("webhook_url", ctx)
    if waiting:
        # LINE refusing our old secret and LINE's calls failing our signature check tell the same story.
        return (ctx.channel is not None and _secret_reissued(ctx.channel)) or waiting
    ours = webhook_url(ctx.channel)
    try:
        endpoint = ctx.endpoint()
    except LineProblem as problem:
        if problem.code == "endpoint_not_set":
            return StepResult("webhook_url", ACTION, "endpoint_not_set")
        return _problem_result("webhook_url", problem)
    line_endpoint = endpoint.get("endpoint") or ""
    if not line_endpoint:
        return StepResult("webhook_url", ACTION, "endpoint_not_set")
    if line_endpoint != ours:
        return StepResult("webhook_url", ACTION, "endpoint_mismatch", {"line_endpoint": line_endpoint})
    reissued = _secret_reissued(ctx.channel)
    if reissued is not None:
        return reissued
    test = (ctx.channel.check_results or {}).get("webhook_test")
    if test and test.get("endpoint") == ours:
        if not test.get("success"):
            from .webhook_test import explain
            return StepResult("webhook_url", ACTION, "webhook_test_failed",
                              {"explanation": str(explain(test)), **test})
        return StepResult("webhook_url", DONE, "webhook_verified", {"tested_at": test.get("at")})
    return StepResult("webhook_url", DONE, "endpoint_matches")


def check_response_settings(ctx):
    waiting = _needs_credentials("response_settings", ctx)
    if waiting:
        return waiting
    try:
        endpoint = ctx.endpoint()
        active = bool(endpoint.get("active"))
    except LineProblem as problem:
        if problem.code != "endpoint_not_set":
            return _problem_result("response_settings", problem)
        active = False
    if not active:
        return StepResult("response_settings", ACTION, "webhook_inactive")
    if ctx.channel.chat_mode == "bot":
        return StepResult("response_settings", ACTION, "chat_mode_bot")
    if not _confirmed(ctx.shop, "auto_response"):
        return StepResult("response_settings", UNVERIFIABLE, "auto_response_unconfirmed", blocks=False)
    return StepResult("response_settings", DONE, "settings_ok")


def latest_follow(channel):
    """The newest follow event the receiver stored for this channel (processed or not yet)."""
    return db.session.scalar(db.select(WebhookEvent).where(
        WebhookEvent.channel_id == channel.id, WebhookEvent.type == "follow",
    ).order_by(WebhookEvent.timestamp.desc()).limit(1))


def check_test_friend(ctx):
    if ctx.channel is None:
        return StepResult("test_friend", TODO, "no_credentials")
    event = latest_follow(ctx.channel)
    if event is None:
        return StepResult("test_friend", TODO, "no_follow_yet")
    contact = db.session.scalar(db.select(Contact).filter_by(
        channel_id=ctx.channel.id, line_user_id=event.source_user_id))
    name = (contact.display_name if contact and contact.display_name else None) or event.source_user_id
    at = event_time(event.timestamp)
    # Shown in the shop's time zone, like every other time on the pages.
    local = at.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(current_app.config["BABEL_DEFAULT_TIMEZONE"]))
    return StepResult("test_friend", DONE, "follow_received",
                      {"name": name, "when": local.strftime("%Y-%m-%d %H:%M"),
                       "user_id": event.source_user_id, "at": iso_utc(at)})
