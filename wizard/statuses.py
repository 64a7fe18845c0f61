"""The states a shop and the statuses a webhook event, an outgoing message and a customer's media can be in.

Why enums: these were bare strings written in a dozen modules and templates, so a typo ("proccessed") was a row
no query would ever find again. Each is a ``StrEnum``, so the database, the JSON, the CLI and the CSS classes
keep the very same strings, and a member compares equal to its string (``"broken" == ShopState.BROKEN``). The
models store them through ``status_type`` below, which adds a named CHECK constraint: the database itself
refuses any other value (SQLite and PostgreSQL alike), whoever writes it.

The same style as the wizard's step states (steps/state.py): templates reach the enums by name (``init_app``
makes them Jinja globals), pages show ``state.label``.

This module is at the bottom: it imports no part of the product, so models and everything above may use it.
"""
from enum import StrEnum

from flask_babel import lazy_gettext as _l
from sqlalchemy import Enum


class ShopState(StrEnum):
    """A shop's one state (steps/health.py says when each applies); an alert opens for BROKEN or DORMANT."""

    ONBOARDING = "onboarding"
    HEALTHY = "healthy"
    ATTENTION = "attention"
    BROKEN = "broken"
    DORMANT = "dormant"

    @property
    def label(self):
        return _SHOP_LABELS[self]


_SHOP_LABELS = {
    ShopState.ONBOARDING: _l("Setting up"),
    ShopState.HEALTHY: _l("Healthy"),
    ShopState.ATTENTION: _l("Needs a look"),
    ShopState.BROKEN: _l("Broken"),
    ShopState.DORMANT: _l("Dormant"),
}


class EventStatus(StrEnum):
    """A webhook event's way through the worker (line/worker.py): stored PENDING, PROCESSING while a worker's
    lease holds it, then PROCESSED, FAILED (it kept failing) or UNPROCESSABLE (signed, but nothing we can
    act on)."""

    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"
    UNPROCESSABLE = "unprocessable"


class OutboxStatus(StrEnum):
    """An outgoing message's (line/outbox.py): QUEUED (maybe until its next attempt), SENDING (a worker holds
    it), SENT, FAILED (refused for good), DEAD (retries used up: staff may retry), UNKNOWN (a reply whose fate
    a crash hid: never sent again by itself)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    UNKNOWN = "unknown"


class ContentStatus(StrEnum):
    """A customer's image, video, audio or file (customers/content.py): PENDING (to fetch), READY (kept),
    TOO_LARGE, OVER_QUOTA (the shop's storage is full), FAILED (LINE no longer has it or could not prepare it),
    EXPIRED (kept, then emptied after RETAIN_MEDIA_DAYS, retention.py)."""

    PENDING = "pending"
    READY = "ready"
    TOO_LARGE = "too_large"
    OVER_QUOTA = "over_quota"
    FAILED = "failed"
    EXPIRED = "expired"


class BatchStatus(StrEnum):
    """A chunk of a multicast or broadcast (outgoing/batches.py): QUEUED (maybe until its next attempt, or held
    while its owner pauses), SENDING (a worker holds it), SENT (LINE took it), FAILED (refused for good, or
    retries used up), OVER_QUOTA (the month's messages were used up), CANCELLED (its owner cancelled it before
    LINE was asked)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    OVER_QUOTA = "over_quota"
    CANCELLED = "cancelled"


class PlanState(StrEnum):
    """A send plan's (plans/plans.py): DRAFT (saved, not confirmed), SCHEDULED (confirmed; a birthday plan
    stays here between its daily runs), SENDING (its run's messages are going out), PAUSED (the owner held
    it), SENT, CANCELLED (before it started, or stopped by the owner), FAILED (``reason`` says why). A run
    (SendPlanRun) uses the same words for its own day."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def label(self):
        return _PLAN_LABELS[self]


_PLAN_LABELS = {
    PlanState.DRAFT: _l("Draft"),
    PlanState.SCHEDULED: _l("Scheduled"),
    PlanState.SENDING: _l("Sending"),
    PlanState.PAUSED: _l("Paused"),
    PlanState.SENT: _l("Sent"),
    PlanState.CANCELLED: _l("Cancelled"),
    PlanState.FAILED: _l("Failed"),
}


class RecipientOutcome(StrEnum):
    """What became of one contact in one run of a send plan: PENDING (on its way), SENT (LINE accepted it),
    left out for NO_CONSENT (marketing without the customer's consent), BLOCKED, OVER_QUOTA (beyond the
    month's messages), FAILED (LINE refused it), CANCELLED (the owner stopped the plan first)."""

    PENDING = "pending"
    SENT = "sent"
    NO_CONSENT = "no_consent"
    BLOCKED = "blocked"
    OVER_QUOTA = "over_quota"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENUMS = (ShopState, EventStatus, OutboxStatus, ContentStatus, BatchStatus, PlanState, RecipientOutcome)


def status_type(enum, length, constraint):
    """The column type of a status: a VARCHAR(``length``) as before (no native enum type to alter when a
    status is added), holding the members' values, with the CHECK constraint named ``constraint`` (a
    migration that adds a status drops and adds it again). Rows read back as members; an unknown string is
    refused before it reaches the database, and by the database if it comes another way (raw SQL)."""
    return Enum(enum, name=constraint, length=length, native_enum=False, create_constraint=True,
                validate_strings=True, values_callable=lambda members: [member.value for member in members])


def init_app(app):
    """Templates compare with ``ShopState.BROKEN`` and the like instead of strings."""
    app.jinja_env.globals.update({enum.__name__: enum for enum in ENUMS})
