"""The product's data: people, shops, their LINE channel, wizard step states, webhook traffic, contacts.

Every timestamp is stored as naive UTC (``utcnow``); pages convert for display. Webhook events are unique per
channel on LINE's ``webhookEventId`` so that a redelivered event is stored once and processed once.
"""
import hashlib
from datetime import date, datetime, timezone

from flask_login import UserMixin
from sqlalchemy import (JSON, BigInteger, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint,
                        event, func)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from . import crypto
from .extensions import db
from .statuses import (BatchStatus, ContentStatus, EventStatus, OutboxStatus, PlanState, RecipientOutcome,
                       ShopState, status_type)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def in_migrations(name, type_, parent_names) -> bool:
    """Alembic's filter: the queue (huey, tasks.py) keeps its own tables in the same PostgreSQL database and
    creates them itself; they are not ours to migrate (or to drop)."""
    return not (type_ == "table" and name.startswith("huey_"))


def iso_utc(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as the ISO 8601 text with ``Z`` that JSON, the API and check details use."""
    return value.isoformat() + "Z" if value else None


# The largest id a lookup may ask for: SQLite's integers are 64-bit, and the driver raises OverflowError for a
# larger Python int instead of finding nothing. URLs (views' ``int`` converter) and JSON ids stop here.
LARGEST_ID = 2**63 - 1


class User(UserMixin, db.Model):
    """Staff see every shop; an owner (``is_staff`` false) sees only ``shop``."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_staff: Mapped[bool] = mapped_column(default=False)
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id", ondelete="SET NULL"))
    api_token_digest: Mapped[str | None] = mapped_column(String(64), unique=True)
    locale: Mapped[str | None] = mapped_column(String(16))
    # Raised by signing out: every session and "remember me" cookie issued before it stops working.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by staff (accounts.deactivate): such a user cannot sign in and every session of theirs ends.
    deactivated_at: Mapped[datetime | None]
    last_sign_in_at: Mapped[datetime | None]

    shop: Mapped["Shop | None"] = relationship(back_populates="owners", foreign_keys=[shop_id])

    def set_password(self, password: str, method: str = "scrypt") -> None:
        self.password_hash = generate_password_hash(password, method)

    def get_id(self) -> str:
        """The session's user id carries a fingerprint of the password hash and the session version, so
        changing the password or signing out ends every other session and "remember me" cookie."""
        return f"{self.id}:{self.session_fingerprint}"

    @property
    def session_fingerprint(self) -> str:
        # Version 0 keeps the fingerprint sessions had before session_version existed.
        material = self.password_hash + (f":{self.session_version}" if self.session_version else "")
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def can_see(self, shop: "Shop") -> bool:
        return self.is_staff or self.shop_id == shop.id

    @property
    def is_active(self) -> bool:
        """Flask-Login's: a deactivated account is refused by ``login_user`` and by the session loader."""
        return self.deactivated_at is None


class Shop(db.Model):
    """A CRM customer. Owner confirmations are the facts LINE cannot tell us (see the wizard's steps)."""

    __tablename__ = "shops"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    line_module_enabled: Mapped[bool] = mapped_column(default=True)
    # What the owner confirmed, keyed by what was confirmed (e.g. "line_login", "auto_response"), with the time.
    confirmations: Mapped[dict] = mapped_column(JSON, default=dict)
    claimed_basic_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owners: Mapped[list[User]] = relationship(back_populates="shop", foreign_keys=[User.shop_id])
    # Every channel the shop ever connected; a reset disconnects one but keeps its contacts and history.
    channels: Mapped[list["Channel"]] = relationship(back_populates="shop", cascade="all, delete-orphan")
    # The connected one, if any.
    channel: Mapped["Channel | None"] = relationship(
        primaryjoin="and_(Shop.id == Channel.shop_id, Channel.disconnected_at.is_(None))",
        uselist=False, viewonly=True)
    step_states: Mapped[list["StepState"]] = relationship(back_populates="shop", cascade="all, delete-orphan")
    # The staff member who looks after this shop (the console's "assigned to me"; alerts e-mail them too). No
    # foreign key: users.shop_id points the other way, and a cycle of keys makes both tables hard to drop or
    # create on their own. Accounts are deactivated, never deleted, so the id stays valid.
    assigned_staff_id: Mapped[int | None] = mapped_column(index=True)
    assigned_staff: Mapped["User | None"] = relationship(
        primaryjoin="foreign(Shop.assigned_staff_id) == User.id", uselist=False)
    health: Mapped["ShopHealth | None"] = relationship(back_populates="shop", uselist=False,
                                                       cascade="all, delete-orphan")


class Channel(db.Model):
    """The shop's LINE Messaging API channel, as far as we know it from the last checks."""

    __tablename__ = "channels"
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[str] = mapped_column(String(20), index=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    webhook_token: Mapped[str] = mapped_column(String(64), unique=True)
    bot_user_id: Mapped[str | None] = mapped_column(String(40))
    basic_id: Mapped[str | None] = mapped_column(String(40))
    display_name: Mapped[str | None] = mapped_column(String(200))
    picture_url: Mapped[str | None] = mapped_column(String(500))
    chat_mode: Mapped[str | None] = mapped_column(String(10))
    mark_as_read_mode: Mapped[str | None] = mapped_column(String(10))
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)
    disconnected_at: Mapped[datetime | None]
    # When LINE last sent its verification (an empty events list) to our receiver.
    last_verified_at: Mapped[datetime | None]
    last_delivery_at: Mapped[datetime | None]
    # When the last delivery with an event came (LINE's verifications carry none), at most a second late: what
    # "last event" means to people (the console), where last_delivery_at also counts the watch's own tests.
    last_event_at: Mapped[datetime | None]
    # When LINE last sent an event again (``isRedelivery``), stored or a duplicate: proof redelivery is on.
    redelivery_seen_at: Mapped[datetime | None]
    # Raw results of the latest live checks, keyed by check name, each {"at": iso, ...}.
    check_results: Mapped[dict] = mapped_column(JSON, default=dict)

    shop: Mapped[Shop] = relationship(back_populates="channels")

    @property
    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    @secret.setter
    def secret(self, value: str) -> None:
        self.secret_encrypted = crypto.encrypt(value)

    def remember_bot_info(self, info: dict) -> None:
        """What LINE's bot info says about the account, kept for the pages (name, picture, chat mode …)."""
        self.bot_user_id = info.get("userId")
        self.basic_id = info.get("basicId")
        self.display_name = info.get("displayName")
        self.picture_url = info.get("pictureUrl")
        self.chat_mode = info.get("chatMode")
        self.mark_as_read_mode = info.get("markAsReadMode")

    @property
    def add_friend_url(self) -> str | None:
        if not self.basic_id:
            return None
        return "https://line.me/R/ti/p/%40" + self.basic_id.lstrip("@")


class StepState(db.Model):
    """The last known state of one wizard step for one shop; the overall status is derived from these."""

    __tablename__ = "step_states"
    __table_args__ = (UniqueConstraint("shop_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(60))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)

    shop: Mapped[Shop] = relationship(back_populates="step_states")


class ShopHealth(db.Model):
    """The shop's state as last derived (steps/health.py) and since when: one row per shop, so that the staff
    console can filter and sort thousands of shops without evaluating any of them.

    ``state`` is one of onboarding / healthy / attention / broken / dormant, ``reason`` its code, ``step`` the
    wizard step that fixes it (the current step while onboarding). ``since`` changes only when the state or
    the reason does. ``connected_once_at``: when the shop was first seen connected; until then it is
    onboarding, afterwards a shop that stops working is broken. The watch (watch/drift.py) plans its checks
    with ``checked_at`` (LINE asked, by a page or the watch) and ``daily_checked_at`` (LINE's webhook test and
    follower count, at most daily)."""

    __tablename__ = "shop_health"
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[ShopState] = mapped_column(status_type(ShopState, 12, "ck_shop_health_state"), index=True)
    reason: Mapped[str] = mapped_column(String(60))
    step: Mapped[str | None] = mapped_column(String(40))
    since: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    connected_once_at: Mapped[datetime | None]
    checked_at: Mapped[datetime | None] = mapped_column(index=True)
    daily_checked_at: Mapped[datetime | None]
    # When a round last put this shop's check on the queue: a round never queues it again while that waits.
    queued_at: Mapped[datetime | None]
    # When the re-check that newer passive evidence (refused signatures, deliveries) asked for runs or ran: one
    # per burst, at most one per EVIDENCE_SPACING (watch/evidence.py).
    evidence_check_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    shop: Mapped["Shop"] = relationship(back_populates="health")


class ShopStateChange(db.Model):
    """Every change of a shop's state or reason, for its timeline (the console's shop page)."""

    __tablename__ = "shop_state_changes"
    __table_args__ = (Index("ix_state_changes_shop_at", "shop_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[ShopState] = mapped_column(status_type(ShopState, 12, "ck_shop_state_changes_state"))
    reason: Mapped[str] = mapped_column(String(60))
    previous_state: Mapped[ShopState | None] = mapped_column(
        status_type(ShopState, 12, "ck_shop_state_changes_previous_state"))
    previous_reason: Mapped[str | None] = mapped_column(String(60))


class StepChange(db.Model):
    """A wizard step's recorded result changed (steps/status.py): the shop page's step history.

    StepState keeps only each step's latest result, so "when did step 5 start needing action, and when was it
    done again?" was lost at the next check. One row per change of (state, reason), never one per evaluation:
    a shop checked every 15 minutes adds nothing while its steps stay as they were. ``previous_*`` is what the
    step said before (None for its first result), so a row reads on its own."""

    __tablename__ = "step_changes"
    __table_args__ = (Index("ix_step_changes_shop_at", "shop_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(60))
    previous_state: Mapped[str | None] = mapped_column(String(20))
    previous_reason: Mapped[str | None] = mapped_column(String(60))


class ShopCheck(db.Model):
    """One live check of a shop against LINE (steps/status.py), for its timeline: when, what made it run
    (``trigger``: watch, cli, check_now, owner_page, staff_page, api) and who, if a person (``actor``, an
    e-mail address), and what it found (the shop's state, reason and fixing step as this check derived them,
    which may differ from the recorded state: a broken shop LINE could not be asked about stays broken).

    Small and bounded: status.py deletes a shop's rows older than CHECK_HISTORY_DAYS and beyond the newest
    CHECK_HISTORY_PER_SHOP when it writes one, so the table never outgrows shops × that cap."""

    __tablename__ = "shop_checks"
    __table_args__ = (Index("ix_shop_checks_shop_at", "shop_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    trigger: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str | None] = mapped_column(String(254))
    state: Mapped[ShopState] = mapped_column(status_type(ShopState, 12, "ck_shop_checks_state"))
    reason: Mapped[str] = mapped_column(String(60))
    step: Mapped[str | None] = mapped_column(String(40))


class Alert(db.Model):
    """A shop that became broken or dormant, for one reason (watch/alerts.py).

    ``open_reason`` equals ``reason`` while the alert is open and is cleared when it closes: the unique key on
    (shop, open_reason) keeps one open alert per shop and reason, however many workers notice it at once
    (NULLs never collide, so closed alerts stay as history). Staff acknowledge it (it stays open, no more
    e-mail) or snooze it until a time; it closes by itself when the check passes again."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("shop_id", "open_reason", name="uq_alert_open_per_reason"),
                      Index("ix_alerts_open", "closed_at", "opened_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    # The shop's state that opened it: broken or dormant.
    state: Mapped[ShopState] = mapped_column(status_type(ShopState, 12, "ck_alerts_state"))
    reason: Mapped[str] = mapped_column(String(60))
    open_reason: Mapped[str | None] = mapped_column(String(60))
    step: Mapped[str | None] = mapped_column(String(40))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    snoozed_until: Mapped[datetime | None]
    last_emailed_at: Mapped[datetime | None]
    emails_sent: Mapped[int] = mapped_column(default=0)
    last_posted_at: Mapped[datetime | None]

    shop: Mapped["Shop"] = relationship()
    acknowledged_by: Mapped["User | None"] = relationship()

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def snoozed(self, now=None) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > (now or utcnow())


class WebhookDelivery(db.Model):
    """One accepted POST from LINE, its raw body kept so nothing it carried can be lost. ``request_id``: the
    request's id (nginx's ``$request_id``, the X-Request-Id every log line of it and of the tasks it caused
    carries), so a delivery found here can be followed through the logs."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    destination: Mapped[str | None] = mapped_column(String(40))
    event_count: Mapped[int] = mapped_column(default=0)
    new_event_count: Mapped[int] = mapped_column(default=0)
    body: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))


class WebhookEvent(db.Model):
    """One event from a delivery. ``status`` is pending until the worker has run it: processed, failed (it
    kept failing) or unprocessable (signed, but not something we can act on; ``error`` says why)."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("channel_id", "webhook_event_id", name="uq_event_per_channel"),
        Index("ix_events_pending", "status", "timestamp"),
        # The worker runs one user's events one at a time, oldest first: "is anything of this user before it?"
        Index("ix_events_per_user", "channel_id", "source_user_id", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    webhook_event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str | None] = mapped_column(String(20))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    source_type: Mapped[str | None] = mapped_column(String(10))
    source_user_id: Mapped[str | None] = mapped_column(String(40))
    is_redelivery: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[EventStatus] = mapped_column(status_type(EventStatus, 16, "ck_webhook_events_status"),
                                                default=EventStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # A worker's lease (line/worker.py): who holds the event and until when; a dead worker's lease runs out.
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None]
    # A failed attempt waits until then before the next (backoff).
    next_attempt_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]


class WebhookRejection(db.Model):
    """Counts of refused deliveries per channel and reason. Refused bodies are no deliveries (they may be
    forged); those refused for their signature wait, encrypted, in the quarantine (QuarantinedBody)."""

    __tablename__ = "webhook_rejections"
    __table_args__ = (UniqueConstraint("channel_id", "reason"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(40))
    count: Mapped[int] = mapped_column(default=0)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The refusals in a row since the channel last had a valid delivery (or was connected again), and when
    # the first of them came: one forged POST is noise, a steady run of them is LINE signing with another secret.
    streak: Mapped[int] = mapped_column(default=0, server_default="0")
    streak_since: Mapped[datetime | None]


class Contact(db.Model):
    """A LINE user who added the shop's account: the CRM contact the whole integration exists for."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("channel_id", "line_user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    line_user_id: Mapped[str] = mapped_column(String(40))
    display_name: Mapped[str | None] = mapped_column(String(200))
    picture_url: Mapped[str | None] = mapped_column(String(500))
    status_message: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16))
    # When LINE last gave us the profile (name, picture, language); None: never, so the form asks for it first.
    profile_fetched_at: Mapped[datetime | None]
    followed_at: Mapped[datetime | None]
    blocked_at: Mapped[datetime | None]
    form_sent_at: Mapped[datetime | None]
    # The customer data form (views/contact_form.py, customers/links.py). The link's token is kept only
    # encrypted (``form_token`` decrypts it) and as its SHA-256 digest (the lookup); it is signed and expires.
    form_token_digest: Mapped[str | None] = mapped_column(String(64), unique=True)
    form_token_encrypted: Mapped[str | None] = mapped_column(Text)
    form_link_issued_at: Mapped[datetime | None]
    form_filled_at: Mapped[datetime | None]
    customer_name: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(254))
    birthday: Mapped[date | None]
    gender: Mapped[str | None] = mapped_column(String(12))  # customers/fields.py GENDERS
    city: Mapped[str | None] = mapped_column(String(3))  # ISO 3166-2:TW code (customers/fields.py CITIES)
    # Art. 20: marketing only with its own ticked box; the time it was last given or withdrawn.
    marketing_consent: Mapped[bool] = mapped_column(default=False, server_default="0")
    marketing_consent_at: Mapped[datetime | None]
    # When someone of the shop last opened the conversation: the customer's messages after it are unread
    # (the contacts list shows how many; customers/conversation.py).
    seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def blocked(self) -> bool:
        return self.blocked_at is not None

    @property
    def form_token(self) -> str | None:
        """The latest form link's token, in plain (decrypted when the row was loaded, see below)."""
        encrypted = self.form_token_encrypted
        if encrypted is None:
            return None
        cached = self.__dict__.get("_form_token_plain")
        if cached is None or cached[0] != encrypted:
            cached = (encrypted, crypto.decrypt(encrypted))
            self.__dict__["_form_token_plain"] = cached
        return cached[1]

    @form_token.setter
    def form_token(self, value: str | None) -> None:
        self.form_token_encrypted = crypto.encrypt(value) if value else None
        self.form_token_digest = crypto.token_digest(value) if value else None
        self.form_link_issued_at = utcnow() if value else None
        self.__dict__["_form_token_plain"] = (self.form_token_encrypted, value) if value else None


# The contacts page's order (newest friend first, customers/contacts.py) read straight from an index, per
# channel: a page of a shop with 50,000 friends reads 50 rows instead of sorting them all.
Index("ix_contacts_channel_recent", Contact.channel_id, func.coalesce(Contact.followed_at, Contact.created_at),
      Contact.id)


class Message(db.Model):
    """A message a contact sent us (``in``) or we sent them (``out``)."""

    __tablename__ = "messages"
    # A conversation is one contact's messages in time order (customers/conversation.py).
    __table_args__ = (Index("ix_messages_conversation", "contact_id", "sent_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_events.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(3))
    type: Mapped[str] = mapped_column(String(20))
    text: Mapped[str | None] = mapped_column(Text)
    line_message_id: Mapped[str | None] = mapped_column(String(40))
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What an incoming message needs to be shown (customers/conversation.py), by type: sticker (packageId,
    # stickerId, stickerResourceType, keywords, text), location (title, address, latitude, longitude), file
    # (fileName, fileSize), video/audio (duration), media (contentProvider, imageSet). None for text.
    detail: Mapped[dict | None] = mapped_column(JSON)
    # The event's reply token (a staff reply within a minute goes free, customers/replies.py) and its
    # markAsReadToken (sent while Chat is on); ``read_marked_at``: when we asked LINE to mark it read.
    reply_token: Mapped[str | None] = mapped_column(String(255))
    mark_as_read_token: Mapped[str | None] = mapped_column(String(255))
    read_marked_at: Mapped[datetime | None]


class Outbox(db.Model):
    """One message we hand to LINE: the row is written before the call and marked after it (line/outbox.py).

    ``status``: queued (waiting, maybe until ``next_attempt_at``), sending (a worker holds it until
    ``claimed_until``), sent, failed (LINE refused it for good), dead (retries used up: staff may retry),
    unknown (a reply whose fate a crash hid; never sent again, shown to staff). A push carries ``retry_key``
    on every attempt, so LINE delivers it once however often it is retried.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_id", "purpose", name="uq_outbox_event_purpose"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_events.id", ondelete="SET NULL"))
    purpose: Mapped[str] = mapped_column(String(20))  # "form": the customer data form
    method: Mapped[str] = mapped_column(String(10))  # "reply" while a reply token may work, then "push"
    reply_token: Mapped[str | None] = mapped_column(String(255))
    # A reply attempt ended without a clear answer (timeout, 5xx): a later "token already used" is not proof
    # that nothing went out, so the message is then marked unknown instead of pushed a second time.
    reply_uncertain: Mapped[bool] = mapped_column(default=False)
    retry_key: Mapped[str] = mapped_column(String(36), unique=True)
    messages: Mapped[list | None] = mapped_column(JSON)
    status: Mapped[OutboxStatus] = mapped_column(status_type(OutboxStatus, 10, "ck_outbox_status"),
                                                 default=OutboxStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None]
    # Set (and committed) right before LINE is asked: a dead worker's row without it never reached LINE.
    called_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    line_message_ids: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    contact: Mapped["Contact"] = relationship()
    channel: Mapped[Channel] = relationship()


class PeriodicRun(db.Model):
    """The last time slot each periodic task ran in: however many consumers' schedulers fire, the one that
    advances ``slot`` runs the task, the others skip it (tasks.py ``once_per_slot``)."""

    __tablename__ = "periodic_runs"
    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    slot: Mapped[int] = mapped_column(BigInteger, default=0)
    ran_at: Mapped[datetime | None]


class MailMessage(db.Model):
    """One e-mail we sent or tried to send (wizard/mail.py): ``transport`` "smtp" or "file" (instance/outbox/),
    ``error`` when it did not go out. ``body`` is the text as sent with one-time links replaced by a mask, so
    staff can read what went out without being able to use an invitation."""

    __tablename__ = "mail_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    to: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(40))
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id", ondelete="SET NULL"), index=True)
    body: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(255))
    transport: Mapped[str] = mapped_column(String(10))
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    shop: Mapped["Shop | None"] = relationship()


class Invitation(db.Model):
    """A link by e-mail that lets one person set a password and become an owner of ``shop``. Only the token's
    digest is stored; a pending invitation is neither accepted, revoked nor past ``expires_at``."""

    __tablename__ = "invitations"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    shop: Mapped[Shop] = relationship()
    invited_by: Mapped["User | None"] = relationship()

    def pending(self, now=None) -> bool:
        return (self.accepted_at is None and self.revoked_at is None
                and self.expires_at > (now or utcnow()))


class ApiToken(db.Model):
    """A named API token of a staff user, stored as its SHA-256 digest; ``tail`` (its last 4 characters) is
    all a page shows of it after the moment it was created."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    tail: Mapped[str] = mapped_column(String(4), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class AuditEntry(db.Model):
    """Who changed what, when (wizard/audit.py). ``actor_id`` is None for the system or the CLI, and
    ``actor`` is the label shown (an e-mail address, "cli", "system"). ``detail`` never holds a secret."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_shop_at", "shop_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(254))
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str | None] = mapped_column(String(254))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)

    shop: Mapped["Shop | None"] = relationship()


class QuarantinedBody(db.Model):
    """A webhook body refused for its signature, kept encrypted in case LINE signed it with a Channel secret
    not entered yet (line/quarantine.py): checked again with the next secret saved, then stored as a delivery
    or deleted. Until then it is neither a delivery nor an event; each channel keeps at most 7 days, 1,000
    bodies and 4 MiB of them, only what could be LINE's, never evicting older ones for new. ``size``: the raw
    body's length in bytes; ``signature``: its x-line-signature."""

    __tablename__ = "quarantined_bodies"
    __table_args__ = (
        # The bounds, read on every insert: a channel's bodies newest first with their sizes, bodies unread.
        Index("ix_quarantine_newest", "channel_id", "id", "size"),
        Index("ix_quarantine_age", "channel_id", "received_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    size: Mapped[int]
    signature: Mapped[str] = mapped_column(String(64))
    body_encrypted: Mapped[str] = mapped_column(Text)


@event.listens_for(Contact, "load")
@event.listens_for(Contact, "refresh")
def _decrypt_form_token(contact, *_args):
    """Decrypt the form link's token while the app (and its key) is at hand, so a contact read in a request
    or a task can still name its link after the session has let it go."""
    encrypted = contact.__dict__.get("form_token_encrypted")
    if encrypted is None:
        return
    try:
        contact.__dict__["_form_token_plain"] = (encrypted, crypto.decrypt(encrypted))
    except (crypto.SecretUnreadable, RuntimeError):
        pass  # another key, or no app: ``form_token`` says so when it is asked


class FormSettings(db.Model):
    """A shop's customer data form (customers/form_settings.py): on or off, the message text (None: the
    default text, in each customer's language), the fields asked ({name: required|optional|off}) and the
    privacy notice's details ({collector, contact_email, contact_phone, retention_years, note}). No row: the
    defaults, which are compliant. ``saved_at``: when the owner (or staff) last saved or confirmed them."""

    __tablename__ = "form_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True, server_default="1")
    text: Mapped[str | None] = mapped_column(Text)
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
    notice: Mapped[dict] = mapped_column(JSON, default=dict)
    # The version (customers/notice.py) of the notice these settings make, as of the last save.
    notice_version: Mapped[str | None] = mapped_column(String(16))
    saved_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(254))

    shop: Mapped["Shop"] = relationship()


class FormNotice(db.Model):
    """Each version of a shop's privacy notice as customers saw it (customers/notice.py): ``content`` is what
    the notice said (collector, purposes, categories, fields, period, recipients, contact), so a submission's
    ``notice_version`` can always be read back."""

    __tablename__ = "form_notices"
    __table_args__ = (UniqueConstraint("shop_id", "version", name="uq_form_notice_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(16))
    content: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FormSubmission(db.Model):
    """Evidence of one submission of the customer form (customers/consent.py): who (the LINE user), when,
    under which notice, the purposes consented to (``["090"]``, plus ``"040"`` only when the marketing box
    was ticked), the fields submitted (names, never values), and the client's address and user agent."""

    __tablename__ = "form_submissions"
    __table_args__ = (Index("ix_form_submissions_contact_at", "contact_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    line_user_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    notice_version: Mapped[str] = mapped_column(String(16))
    purposes: Mapped[list] = mapped_column(JSON)
    marketing: Mapped[bool] = mapped_column(default=False)
    fields: Mapped[list] = mapped_column(JSON)
    locale: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))

    contact: Mapped["Contact"] = relationship()


class MessageContent(db.Model):
    """The image, video, audio or file of an incoming message, fetched from LINE once and kept here
    (customers/content.py). In the database, not in instance/: every web machine and consumer shares it, it
    is backed up with the contact it belongs to and goes with it (cascade). ``status``: pending (to fetch,
    from ``next_attempt_at``), ready (``data`` holds it), too_large (over LINE_CONTENT_MAX_BYTES, not kept),
    failed (LINE no longer has it, or could not prepare it; ``error`` says why). ``data`` is deferred: lists
    never load the bytes."""

    __tablename__ = "message_contents"
    __table_args__ = (Index("ix_message_contents_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    line_message_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[ContentStatus] = mapped_column(status_type(ContentStatus, 10, "ck_message_contents_status"),
                                                  default=ContentStatus.PENDING)
    content_type: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsumerHeartbeat(db.Model):
    """A queue consumer's heartbeat (heartbeat.py): ``consumer`` names it (host:pid), ``beat_at`` is when it last
    said it was alive with ``threads_alive`` of its threads running. Read by every machine's ``/metrics``."""

    __tablename__ = "consumer_heartbeats"
    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)
    threads: Mapped[int] = mapped_column(default=0)
    threads_alive: Mapped[int] = mapped_column(default=0)


# ---- audiences (issue 16) ----

class Segment(db.Model):
    """A saved audience: the segment builder's filters (customers/segments.py, the API's keys, checked) under a
    name the shop's people chose, for the contacts list and send plans to reuse."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("shop_id", "name", name="uq_segment_name_per_shop"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# An audience's "last message from them within N days" (customers/segments.py): the ids of the customers who
# wrote to a channel since a time, read as one range of this index without touching the messages themselves.
Index("ix_messages_from_customer", Message.channel_id, Message.direction, Message.sent_at, Message.contact_id)


# ---- message templates (issue 16) ----
class MessageTemplate(db.Model):
    """A shop's 圖文訊息範本 (wizard/plans/templates.py): a name and one to five LINE message objects, kept as
    LINE takes them (text with ``{name}`` still unfilled, image, Flex bubble or carousel), so a send plan hands
    them to LINE after filling the name, and the API gives them back as they will go. Checked with LINE's
    validate endpoint before every save; the name is unique in its shop (the owner picks a template by it)."""

    __tablename__ = "message_templates"
    __table_args__ = (UniqueConstraint("shop_id", "name", name="uq_message_template_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    messages: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MediaUpload(db.Model):
    """A picture uploaded for a shop's message templates (plans/media.py), stored as two files in MEDIA_DIR,
    ``<name>.jpg`` and ``<name>-preview.jpg``. Only a picture with a row is served, and a template may use only
    its own shop's. ``size``: both files' bytes (the shop's limit counts it); ``digest``: SHA-256 of the file
    as uploaded, so the same file chosen again is the same picture. ``touched_at``: the last time anything
    used it (its upload, a template's save, the hourly cleanup finding it in use), which the cleanup's delete
    checks again, so a picture a template takes while the cleanup looks is never deleted; ``used``: it was
    once in a saved template (kept longer after that: its messages may still be opened)."""

    __tablename__ = "media_uploads"
    __table_args__ = (Index("ix_media_uploads_shop_digest", "shop_id", "digest"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    digest: Mapped[str | None] = mapped_column(String(64))
    used: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    touched_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# ---- outgoing batches (issue 16) ----


class OutgoingBatch(db.Model):
    """One chunk of a multicast (at most 500 recipients) or one broadcast, written with its recipients and
    its retry key before LINE is asked (outgoing/batches.py), so every attempt, by any worker, carries the
    same key and LINE delivers the chunk once.

    ``owner`` and ``owner_id`` name what it belongs to (a send plan: ``"send_plan"`` and the plan's id), and
    ``run_key`` one sending of it (a birthday plan runs every day); ``seq`` numbers the chunks of the run.
    ``recipients``: ``[[contact_id, line_user_id], ...]`` (None for a broadcast, which goes to every friend).
    ``called_at`` is set (and committed) right before LINE is asked and cleared when LINE's answer proves
    nothing went out: a chunk with it set may have arrived, and is only ever sent again with its key.
    ``held_at`` (paused) and ``cancelled_at`` are the owner's; ``request_id`` is LINE's x-line-request-id.
    """

    __tablename__ = "outgoing_batches"
    __table_args__ = (
        UniqueConstraint("owner", "owner_id", "run_key", "seq", name="uq_outgoing_batches_run"),
        Index("ix_outgoing_batches_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(30))
    owner_id: Mapped[int] = mapped_column(BigInteger)
    run_key: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(10))  # "multicast" or "broadcast"
    recipients: Mapped[list | None] = mapped_column(JSON)
    recipient_count: Mapped[int] = mapped_column(default=0)
    messages: Mapped[list] = mapped_column(JSON)
    unit: Mapped[str | None] = mapped_column(String(30))  # LINE's customAggregationUnits (one, ≤ 30 chars)
    retry_key: Mapped[str] = mapped_column(String(36), unique=True)
    status: Mapped[BatchStatus] = mapped_column(status_type(BatchStatus, 10, "ck_outgoing_batches_status"),
                                                default=BatchStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None]
    called_at: Mapped[datetime | None]
    held_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    request_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OutgoingPace(db.Model):
    """A rate limit shared by every consumer (outgoing/pace.py): ``key`` names a channel and a kind of call,
    ``free_at_us`` the time (microseconds since the epoch) from which the next call may go."""

    __tablename__ = "outgoing_pace"
    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    free_at_us: Mapped[int] = mapped_column(BigInteger, default=0)

# ---- send plans (issue 16) ----


class SendPlan(db.Model):
    """A send plan (plans/plans.py): a message template to an audience, for a purpose, at a time.

    ``purpose``: "marketing" (only to contacts who gave marketing consent) or "service". ``audience``:
    ``{"all": bool, "filters": {...}}`` in the filter keys of customers/segments.py (``segment_id``: the saved
    segment it came from). ``send_at``: naive UTC (entered and shown in Taipei time), None for "now".
    ``repeat``: None (once), "birthday" or "birthday_month" (every year, a run each Taipei day at ``hour``).
    ``up_to_quota``: send to as many as the month's quota allows and record the rest over_quota, instead of
    refusing. ``idempotency``: "<UTC date>|<Idempotency-Key>" of the API request that made it (one plan per key
    and day). ``unit``: LINE's customAggregationUnits name its requests carry, for its statistics (``stats``,
    read at ``stats_at``). ``cost_messages`` and ``quota_left``: the cost as last worked out (confirmation,
    then the start)."""

    __tablename__ = "send_plans"
    __table_args__ = (UniqueConstraint("shop_id", "idempotency", name="uq_send_plans_idempotency"),
                      Index("ix_send_plans_due", "state", "send_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    template_id: Mapped[int | None] = mapped_column(index=True)
    purpose: Mapped[str] = mapped_column(String(10))
    audience: Mapped[dict] = mapped_column(JSON, default=dict)
    segment_id: Mapped[int | None]
    send_at: Mapped[datetime | None]
    repeat: Mapped[str | None] = mapped_column(String(16))
    hour: Mapped[int | None]
    up_to_quota: Mapped[bool] = mapped_column(default=False)
    state: Mapped[PlanState] = mapped_column(status_type(PlanState, 10, "ck_send_plans_state"),
                                             default=PlanState.DRAFT)
    reason: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(String(30))
    idempotency: Mapped[str | None] = mapped_column(String(140))
    cost_messages: Mapped[int | None]
    quota_left: Mapped[int | None]
    stats: Mapped[dict | None] = mapped_column(JSON)
    stats_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    shop: Mapped[Shop] = relationship()
    runs: Mapped[list["SendPlanRun"]] = relationship(back_populates="plan", cascade="all, delete-orphan",
                                                     order_by="SendPlanRun.day")


class SendPlanRun(db.Model):
    """One day's sending of a plan: the only one of a one-off plan, one per Taipei day of a birthday plan.
    Unique per (plan, day): whichever worker inserts it starts it, so a run happens once. Its counters are
    raised as its slices are written (plans/filling.py) and by the deliveries' outcomes (plans/runs.py);
    ``reason`` says why it failed."""

    __tablename__ = "send_plan_runs"
    __table_args__ = (UniqueConstraint("plan_id", "day", name="uq_send_plan_runs_day"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("send_plans.id", ondelete="CASCADE"))
    day: Mapped[date]
    state: Mapped[PlanState] = mapped_column(status_type(PlanState, 10, "ck_send_plan_runs_state"),
                                             default=PlanState.SENDING)
    reason: Mapped[str | None] = mapped_column(Text)
    personal: Mapped[bool] = mapped_column(default=False)
    broadcast: Mapped[bool] = mapped_column(default=False)
    recipients: Mapped[int] = mapped_column(default=0)
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    no_consent: Mapped[int] = mapped_column(default=0)
    blocked: Mapped[int] = mapped_column(default=0)
    over_quota: Mapped[int] = mapped_column(default=0)
    cancelled: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # Written slice by slice (plans/filling.py): ``filling`` until the last slice is in; the recipients of
    # the contacts up to ``filled_to`` (contact id) are written, and the deliveries of those up to
    # ``queued_to``; ``fill_last``: the channel's highest contact id at the start (later ones are not in the
    # run); ``sendable``: how many may be sent (the month's quota left; None: no limit).
    filling: Mapped[bool] = mapped_column(default=False, server_default="0")
    filled_to: Mapped[int] = mapped_column(default=0, server_default="0")
    queued_to: Mapped[int] = mapped_column(default=0, server_default="0")
    fill_last: Mapped[int | None]
    sendable: Mapped[int | None]

    plan: Mapped[SendPlan] = relationship(back_populates="runs")


class SendPlanRecipient(db.Model):
    """One contact in one run, with what became of them: the proof of who got the plan, once (unique per run
    and contact). ``outbox_id``: the message of a personal template ({name}), sent one by one."""

    __tablename__ = "send_plan_recipients"
    __table_args__ = (UniqueConstraint("run_id", "contact_id", name="uq_send_plan_recipients_contact"),
                      Index("ix_send_plan_recipients_outcome", "run_id", "outcome"))
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("send_plan_runs.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[RecipientOutcome] = mapped_column(
        status_type(RecipientOutcome, 10, "ck_send_plan_recipients_outcome"), default=RecipientOutcome.PENDING)
    outbox_id: Mapped[int | None] = mapped_column(index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
