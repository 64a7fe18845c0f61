"""The LINE side, played by hand: ``Sandbox`` creates channels, flips their switches as a shop owner would in
LINE's consoles, and makes users follow, block or talk, sending the signed webhook LINE would send.

Users send every kind of message a LINE user can (``send``: text, sticker, image, video, audio, file, location);
image, video, audio and file content is kept for ``GET /v2/bot/message/{id}/content``. Message events carry a
``markAsReadToken`` while Chat is on (``markAsReadMode`` manual: only then do reads need marking); the bot's
``POST /v2/bot/chat/markAsRead`` calls show in ``read_marks``. Each channel has a monthly message quota
(``update(quota=…)`` or ``set_plan``, default ``FREE_QUOTA``): every friend a push, multicast, narrowcast or
broadcast reached counts, replies do not, per calendar month in Japan time (``month_bounds``). ``make_friends``
adds many friends at once (no webhooks), and ``received`` / ``sends`` show what the app sent to whom.

One object serves the control page, the JSON control API, the ``flask sandbox`` commands and tests alike.
Dicts use LINE's camelCase names (``channelId``, ``channelSecret``, ``botUserId``, ``basicId`` …).
"""
import calendar
import json
import random
import time

from sqlalchemy import delete, func, insert, select, update

from . import deliver, ids, samples
from .store import (Store, channels, contents, deliveries, messages, now, read_tokens, reply_tokens, sends,
                    tokens, users)

UNSET = object()
CHAT_MODES = ("chat", "bot")
# LINE Official Account's free plan in Taiwan (輕用量): 200 messages a month. Paid plans raise it.
FREE_QUOTA = 200
# The plans the control side offers, by their monthly message limit ("none": no target limit).
PLANS = {"free": 200, "3000": 3000, "6000": 6000, "none": None}
# Friends made in bulk are written this many to a statement.
BULK_BATCH = 5000
# LINE's months, like its statistics, run on Japan time (UTC+9).
JST = 9 * 3600
# What a LINE user can send, and the fields each kind of message event carries besides id, type and tokens.
USER_MESSAGE_TYPES = ("text", "sticker", "image", "video", "audio", "file", "location")
MESSAGE_FIELDS = {
    "text": {"text", "quotedMessageId"},
    "sticker": {"packageId", "stickerId", "stickerResourceType", "keywords", "text", "quotedMessageId"},
    "image": {"imageSet"},
    "video": {"duration"},
    "audio": {"duration"},
    "file": {"fileName", "fileSize"},
    "location": {"title", "address", "latitude", "longitude"},
}
# Kinds whose event carries a quoteToken (webhook.yml requires it for these; audio, file, location have none).
QUOTABLE = ("text", "sticker", "image", "video")
WITH_CONTENT = ("image", "video", "audio", "file")
STICKER_RESOURCE_TYPES = ("STATIC", "ANIMATION", "SOUND", "ANIMATION_SOUND", "POPUP", "POPUP_SOUND", "CUSTOM",
                          "MESSAGE", "NAME_TEXT", "PER_STICKER_TEXT")
TRANSCODING = ("processing", "succeeded", "failed")
MAX_CONTENT_BYTES = 64 * 1024 * 1024
SAMPLE_LOCATION = {"title": "晴天烘焙坊", "address": "台北市大安區忠孝東路四段 1 號",
                   "latitude": 25.041629, "longitude": 121.543767}
SAMPLE_NAMES = ["林小美", "陳大文", "王淑芬", "張志明", "李怡君",
                "黃建宏", "吳佩珊", "劉家豪", "蔡宜蓁", "楊俊傑"]


class SandboxError(Exception):
    """Something the LINE side would refuse: an unknown channel, a user who is not a friend, a bad URL …"""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Sandbox:
    def __init__(self, database_url: str, *, token_ttl: int = 900, reply_token_ttl: float = 60.0,
                 webhook_timeout: float = deliver.TIMEOUT):
        self.store = Store(database_url)
        # A v3 stateless token lives 15 minutes; a reply token about a minute. Tests may shorten either.
        self.token_ttl = token_ttl
        self.reply_token_ttl = reply_token_ttl
        self.webhook_timeout = webhook_timeout

    def close(self):
        self.store.close()

    # ---- channels ------------------------------------------------------------------------------------------

    def create_channel(self, *, display_name=None, endpoint=None, webhook_active=True, chat_mode="chat",
                       channel_id=None, channel_secret=None, bot_user_id=None, basic_id=None,
                       picture_url=None, premium_id=None) -> dict:
        if endpoint:
            self._check_url(endpoint)
        if chat_mode not in CHAT_MODES:
            raise SandboxError(f"chat mode must be one of {', '.join(CHAT_MODES)}")
        for _ in range(5):
            new_id = channel_id or ids.channel_id()
            if self.store.row(select(channels.c.channel_id).where(channels.c.channel_id == new_id)) is None:
                break
            if channel_id:
                raise SandboxError(f"channel {channel_id} already exists", 409)
        new_basic_id = basic_id or ids.basic_id()
        self.store.run(insert(channels).values(
            channel_id=new_id, secret=channel_secret or ids.channel_secret(),
            bot_user_id=bot_user_id or ids.user_id(), basic_id=new_basic_id, premium_id=premium_id,
            display_name=display_name or f"Sandbox Shop {new_basic_id[1:4]}", picture_url=picture_url,
            endpoint=endpoint or None, webhook_active=bool(webhook_active), chat_mode=chat_mode,
            tokens_issued=0, fail_delay=0.0, created_at=now(),
        ))
        return self.channel(new_id)

    def channel(self, channel_id) -> dict:
        return _channel_dict(self._channel_row(channel_id))

    def channels(self) -> list[dict]:
        rows = self.store.rows(select(channels).order_by(channels.c.created_at))
        return [_channel_dict(row) for row in rows]

    def update(self, channel_id, *, endpoint=UNSET, webhook_active=None, chat_mode=None, reissue_secret=False,
               display_name=None, quota=UNSET, insight_lag=UNSET) -> dict:
        """Change the channel as its owner would in LINE's consoles; an endpoint of "" or None removes it.
        ``quota``: messages a month (an int, 0 or more; the plan plus additional messages), or None for no
        target limit (LINE's quota type ``none``). ``insight_lag``: seconds after a day ends (Japan time)
        until LINE has counted its friends (the follower insight answers ``unready`` until then), None: at once."""
        self._channel_row(channel_id)
        values = {}
        if insight_lag is not UNSET:
            try:
                lag = None if insight_lag is None else float(insight_lag)
            except (TypeError, ValueError):
                raise SandboxError("the insight lag is a number of seconds, or none") from None
            if isinstance(insight_lag, bool) or (lag is not None and not 0 <= lag <= 30 * 86400):
                raise SandboxError("the insight lag is a number of seconds, or none")
            values["insight_lag"] = lag
        if quota is not UNSET:
            if quota is None:
                values.update(quota_type="none", quota_value=None)
            else:
                try:
                    limit = int(quota)
                except (TypeError, ValueError):
                    raise SandboxError("the quota is a number of messages a month, or none") from None
                if limit < 0 or isinstance(quota, bool):
                    raise SandboxError("the quota is a number of messages a month, or none")
                values.update(quota_type="limited", quota_value=limit)
        if endpoint is not UNSET:
            if endpoint:
                self._check_url(endpoint)
            values["endpoint"] = endpoint or None
        if webhook_active is not None:
            values["webhook_active"] = bool(webhook_active)
        if chat_mode is not None:
            if chat_mode not in CHAT_MODES:
                raise SandboxError(f"chat mode must be one of {', '.join(CHAT_MODES)}")
            values["chat_mode"] = chat_mode
        if display_name:
            values["display_name"] = display_name
        if reissue_secret:
            values["secret"] = ids.channel_secret()
        if values:
            self.store.run(update(channels).where(channels.c.channel_id == channel_id).values(**values))
        return self.channel(channel_id)

    # ---- users and what they do ----------------------------------------------------------------------------

    def users(self, channel_id, limit=None) -> list[dict]:
        """The account's users, newest first (the first ``limit`` of them when given)."""
        self._channel_row(channel_id)
        rows = self.store.rows(select(users).where(users.c.channel_id == channel_id)
                               .order_by(users.c.followed_at.desc(), users.c.user_id).limit(limit))
        return [_user_dict(row) for row in rows]

    def user(self, channel_id, user_id) -> dict:
        return _user_dict(self._user_row(channel_id, user_id))

    def follow(self, channel_id, user_id=None, name=None, language="zh-TW", deliver_event=True,
               at=None) -> dict:
        """A user adds the account as a friend (or unblocks it); LINE then sends a follow event.

        For the watch's tests: ``deliver_event=False`` loses the event on its way (as a network fault or an
        unreachable CRM would: LINE still counts the friend), ``at`` (epoch seconds) dates the follow back
        for LINE's daily friend count."""
        self._channel_row(channel_id)
        if user_id and not _looks_like_user_id(user_id):
            raise SandboxError("a user ID is U followed by 32 hex digits")
        existing = self.store.row(select(users).where(users.c.channel_id == channel_id,
                                                      users.c.user_id == user_id)) if user_id else None
        if existing and existing["following"]:
            raise SandboxError(f"{user_id} is already a friend; LINE sends a follow event only after a block "
                               "and unblock", 409)
        user_id = user_id or ids.user_id()
        at = now() if at is None else float(at)
        if existing:
            values = {"following": True, "followed_at": at, "blocked_at": None}
            if name:
                values["display_name"] = name
            self.store.run(update(users).where(users.c.channel_id == channel_id, users.c.user_id == user_id)
                           .values(**values))
        else:
            self.store.run(insert(users).values(
                channel_id=channel_id, user_id=user_id, display_name=name or random.choice(SAMPLE_NAMES),
                language=language, following=True, followed_at=at, first_followed_at=at,
            ))
        event = self._event(channel_id, "follow", user_id, follow={"isUnblocked": existing is not None})
        if not deliver_event:
            return {"user": self.user(channel_id, user_id), "event": event, "delivery": None,
                    "skipped": "the event was lost on its way"}
        return self._act(channel_id, user_id, event)

    def follower_counts(self, channel_id, until) -> dict:
        """LINE's friend statistics as of ``until`` (epoch seconds): first adds, and friends blocking now."""
        rows = self.store.rows(select(users).where(users.c.channel_id == str(channel_id)))
        followers = sum(1 for row in rows if (row["first_followed_at"] or row["followed_at"] or until) < until)
        blocks = sum(1 for row in rows if not row["following"] and row["blocked_at"] and row["blocked_at"] < until)
        return {"followers": followers, "blocks": blocks, "targetedReaches": max(0, followers - blocks)}

    def make_friends(self, channel_id, count, *, name="好友") -> list[str]:
        """``count`` new users add the account at once, without webhooks (LINE would send ``count`` follow
        events; a bench of 100,000 friends wants none of them): returns their user IDs, in the order made.
        Written in batches of ``BULK_BATCH`` in one transaction, so a failure leaves no half of them."""
        self._channel_row(channel_id)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise SandboxError("count is a whole number from 1 to 1000000")
        at, made = now(), [ids.user_id() for _ in range(count)]
        with self.store.engine.begin() as conn:
            for start in range(0, count, BULK_BATCH):
                conn.execute(insert(users), [
                    dict(channel_id=str(channel_id), user_id=user_id, display_name=f"{name}{start + offset + 1}",
                         picture_url=None, status_message=None, language="zh-TW", following=True,
                         followed_at=at, blocked_at=None, first_followed_at=at)
                    for offset, user_id in enumerate(made[start:start + BULK_BATCH])])
        return made

    def unfollow(self, channel_id, user_id=None) -> dict:
        """The user (by default the friend who followed last) blocks the account; LINE sends an unfollow event
        (which carries no reply token)."""
        user_id = user_id or self._latest_friend(channel_id)
        user = self._user_row(channel_id, user_id)
        if not user["following"]:
            raise SandboxError(f"{user_id} is not a friend of this account", 409)
        self.store.run(update(users).where(users.c.channel_id == channel_id, users.c.user_id == user_id)
                       .values(following=False, blocked_at=now()))
        return self._act(channel_id, user_id, self._event(channel_id, "unfollow", user_id))

    def _latest_friend(self, channel_id) -> str:
        """The friend who followed last: who acts when a command names nobody."""
        friend = self.store.row(select(users.c.user_id).where(users.c.channel_id == channel_id,
                                                              users.c.following.is_(True))
                                .order_by(users.c.followed_at.desc()))
        if friend is None:
            self._channel_row(channel_id)
            raise SandboxError("this account has no friends yet: make a user follow first", 409)
        return friend["user_id"]

    def say(self, channel_id, user_id=None, text="") -> dict:
        """A friend sends a text message; without ``user_id`` the friend who followed last speaks."""
        if not text:
            raise SandboxError("say what? The text is empty")
        return self.send(channel_id, user_id, "text", text=text)

    def send(self, channel_id, user_id=None, message_type="text", *, content=None, content_type=None,
             ready=True, **fields) -> dict:
        """A friend sends a message of any kind a LINE user can send, with its event's fields in LINE's names
        (``text``; ``packageId``, ``stickerId``, ``stickerResourceType``; ``duration``; ``fileName``;
        ``title``, ``address``, ``latitude``, ``longitude`` …). Missing fields get sample values.

        Image, video, audio and file messages keep content for the content endpoint: ``content`` (bytes) and
        ``content_type``, or a small generated file of the kind (a file message of ``fileSize`` bytes when
        that is given). ``ready=False`` leaves a video or audio "processing" until ``finish_transcoding``."""
        if message_type not in USER_MESSAGE_TYPES:
            raise SandboxError(f"a LINE user sends one of: {', '.join(USER_MESSAGE_TYPES)}")
        unknown = set(fields) - MESSAGE_FIELDS[message_type]
        if unknown:
            raise SandboxError(f"a {message_type} message has no {', '.join(sorted(unknown))}")
        if content is not None and message_type not in WITH_CONTENT:
            raise SandboxError(f"a {message_type} message has no content to download")
        user_id = user_id or self._latest_friend(channel_id)
        user = self._user_row(channel_id, user_id)
        if not user["following"]:
            raise SandboxError(f"{user_id} blocked this account and cannot send it messages", 409)
        channel = self._channel_row(channel_id)
        message = {"id": ids.message_id(), "type": message_type}
        if message_type in QUOTABLE:
            message["quoteToken"] = ids.quote_token()
        read_token = ids.read_token() if channel["chat_mode"] == "chat" else None
        if read_token:
            message["markAsReadToken"] = read_token
        stored = _message_fields(message_type, fields, content, content_type)
        message.update(stored.pop("fields"))
        statements = []
        if read_token:
            statements.append(insert(read_tokens).values(token=read_token, channel_id=channel_id, user_id=user_id,
                                                         message_id=message["id"], created_at=now()))
        if message_type in WITH_CONTENT:
            transcoding = ("succeeded" if ready else "processing") if message_type in ("video", "audio") else None
            statements.append(insert(contents).values(
                message_id=message["id"], channel_id=channel_id, user_id=user_id, message_type=message_type,
                content_type=stored["content_type"], data=stored["data"], transcoding=transcoding,
                created_at=now()))
        if statements:
            self.store.run(*statements)
        return self._act(channel_id, user_id, self._event(channel_id, "message", user_id, message=message))

    def finish_transcoding(self, channel_id, message_id, status="succeeded") -> dict:
        """LINE finishes (or fails) preparing a video or audio: its transcoding status becomes ``status``."""
        if status not in TRANSCODING:
            raise SandboxError(f"a transcoding status is one of {', '.join(TRANSCODING)}")
        row = self._content_row(channel_id, message_id)
        if row["transcoding"] is None:
            raise SandboxError("only video and audio are transcoded", 409)
        self.store.run(update(contents).where(contents.c.message_id == message_id).values(transcoding=status))
        return self.content(channel_id, message_id)

    def content(self, channel_id, message_id) -> dict:
        """What a user's message holds for download: ``{"messageId", "type", "contentType", "size",
        "transcoding", "data"}``."""
        row = self._content_row(channel_id, message_id)
        return {"messageId": row["message_id"], "type": row["message_type"], "contentType": row["content_type"],
                "size": len(row["data"]), "transcoding": row["transcoding"], "data": bytes(row["data"])}

    def contents(self, channel_id, limit=20) -> list[dict]:
        """Content users sent (newest first), without the bytes: for the control page."""
        self._channel_row(channel_id)
        rows = self.store.rows(select(contents.c.message_id, contents.c.user_id, contents.c.message_type,
                                      contents.c.content_type, contents.c.transcoding, contents.c.created_at,
                                      func.length(contents.c.data).label("size"))
                               .where(contents.c.channel_id == str(channel_id))
                               .order_by(contents.c.created_at.desc()).limit(limit))
        return [{"messageId": row["message_id"], "userId": row["user_id"], "type": row["message_type"],
                 "contentType": row["content_type"], "size": row["size"], "transcoding": row["transcoding"],
                 "at": row["created_at"]} for row in rows]

    def read_marks(self, channel_id, user_id=None) -> list[dict]:
        """Messages the bot marked as read (``POST /v2/bot/chat/markAsRead``), oldest first. Marking one reads
        that user's earlier messages too, as in LINE's chat."""
        self._channel_row(channel_id)
        query = (select(read_tokens).where(read_tokens.c.channel_id == str(channel_id),
                                           read_tokens.c.read_at.is_not(None))
                 .order_by(read_tokens.c.created_at, read_tokens.c.message_id))
        if user_id:
            query = query.where(read_tokens.c.user_id == user_id)
        return [{"userId": row["user_id"], "messageId": row["message_id"], "readAt": row["read_at"]}
                for row in self.store.rows(query)]

    # ---- the monthly message quota -------------------------------------------------------------------------

    def quota(self, channel_id, at=None) -> dict:
        """``{"type", "value", "totalUsage"}``: the monthly limit (value None when the type is none) and the
        messages counted against it in the month of ``at`` (now by default)."""
        row = self._channel_row(channel_id)
        return dict(quota_of(row), totalUsage=self.quota_consumption(channel_id, at))

    def quota_consumption(self, channel_id, at=None) -> int:
        """Messages counted in the (Japan-time calendar) month of ``at``: one per friend each push, multicast,
        narrowcast or broadcast reached; replies are free, and a friend who blocked the account is not sent
        anything, so not counted."""
        start, end = month_bounds(now() if at is None else at)
        return int(self.store.scalar(select(func.coalesce(func.sum(sends.c.delivered), 0)).where(
            sends.c.channel_id == str(channel_id), sends.c.created_at >= start, sends.c.created_at < end)) or 0)

    def set_plan(self, channel_id, plan) -> dict:
        """The account's LINE Official Account plan (``PLANS``): its monthly message limit."""
        if plan not in PLANS:
            raise SandboxError(f"a plan is one of: {', '.join(PLANS)}")
        return self.update(channel_id, quota=PLANS[plan])

    def redeliver(self, channel_id) -> dict:
        """Send the last event webhook again, marked ``isRedelivery`` as LINE's redelivery does."""
        channel = self._channel_row(channel_id)
        last = self.store.row(select(deliveries).where(deliveries.c.channel_id == channel_id,
                                                       deliveries.c.kind == "events")
                              .order_by(deliveries.c.id.desc()))
        if last is None:
            raise SandboxError("nothing was delivered yet", 409)
        payload = json.loads(last["body"])
        for event in payload["events"]:
            event["deliveryContext"] = {"isRedelivery": True}
        return {"delivery": self._post(channel, "events", last["url"], payload)}

    def verify(self, channel_id, endpoint=None) -> dict:
        """The console's "Verify" button: an empty events list, signed, to the endpoint (no hourly limit)."""
        channel = self._channel_row(channel_id)
        url = endpoint or channel["endpoint"]
        if not url:
            raise SandboxError("no webhook URL is set", 404)
        self._check_url(url)
        return self._post(channel, "test", url, {"destination": channel["bot_user_id"], "events": []})

    # ---- what happened -------------------------------------------------------------------------------------

    def sent_messages(self, channel_id, user_id=None, limit=None) -> list[dict]:
        """Messages our app sent (reply, push, multicast, narrowcast, broadcast), oldest first, one per
        recipient and message object: what customers received (``delivered`` False: blocked, never seen).
        With ``limit``, the newest ``limit`` of them (still oldest first)."""
        query = select(messages).where(messages.c.channel_id == str(channel_id))
        if user_id:
            query = query.where(messages.c.user_id == user_id)
        if limit:
            rows = self.store.rows(query.order_by(messages.c.id.desc()).limit(limit))[::-1]
        else:
            rows = self.store.rows(query.order_by(messages.c.id))
        return [{
            "id": row["message_id"], "to": row["user_id"], "kind": row["kind"], "message": row["message"],
            "delivered": row["delivered"], "retryKey": row["retry_key"], "requestId": row["request_id"],
            "at": row["created_at"],
        } for row in rows]

    def received(self, channel_id, user_id) -> list[dict]:
        """What one user received from the account, oldest first (blocked-time messages left out)."""
        self._user_row(channel_id, user_id)
        return [m for m in self.sent_messages(channel_id, user_id) if m["delivered"]]

    def sends(self, channel_id, limit=20) -> list[dict]:
        """Send requests LINE accepted (push, multicast, narrowcast, broadcast), newest first."""
        self._channel_row(channel_id)
        rows = self.store.rows(select(sends).where(sends.c.channel_id == str(channel_id))
                               .order_by(sends.c.id.desc()).limit(limit))
        return [{"requestId": row["request_id"], "kind": row["kind"], "retryKey": row["retry_key"],
                 "unit": row["unit"], "messages": len(row["messages"]), "targets": row["targets"],
                 "delivered": row["delivered"], "phase": row["phase"], "at": row["created_at"]} for row in rows]

    def deliveries(self, channel_id, limit=50) -> list[dict]:
        """Webhooks sent to the channel's endpoint, newest first, with the endpoint's answer."""
        rows = self.store.rows(select(deliveries).where(deliveries.c.channel_id == channel_id)
                               .order_by(deliveries.c.id.desc()).limit(limit))
        return [{
            "id": row["id"], "kind": row["kind"], "url": row["url"], "body": json.loads(row["body"]),
            "success": row["success"], "statusCode": row["status_code"], "reason": row["reason"],
            "detail": row["detail"], "responseBody": row["response_body"], "at": row["at"],
        } for row in rows]

    def token_issues(self, channel_id) -> int:
        """How many access tokens were issued for the channel (shows whether a client caches them)."""
        return self._channel_row(channel_id)["tokens_issued"]

    # ---- failure injection ---------------------------------------------------------------------------------

    def fail(self, channel_id, status=429, *, times=None, delay=0.0, retry_after=None) -> dict:
        """Answer the channel's API calls with ``status`` (``times`` times, or until ``heal``), and/or wait
        ``delay`` seconds before answering any of them. ``status=None`` with a delay only slows LINE down.
        ``retry_after`` (seconds) goes along as the Retry-After header."""
        if status is not None and not 400 <= int(status) <= 599:
            raise SandboxError("a failure status is between 400 and 599")
        if retry_after is not None and not 0 <= int(retry_after) <= 86400:
            raise SandboxError("Retry-After is between 0 and 86400 seconds")
        self._channel_row(channel_id)
        self.store.run(update(channels).where(channels.c.channel_id == channel_id).values(
            fail_status=status, fail_times=times, fail_delay=float(delay or 0.0),
            fail_retry_after=None if retry_after is None else int(retry_after)))
        return self.channel(channel_id)

    def heal(self, channel_id) -> dict:
        return self.fail(channel_id, None)

    def revoke_tokens(self, channel_id) -> None:
        """Make LINE forget every access token of the channel (as if they expired)."""
        self.store.run(delete(tokens).where(tokens.c.channel_id == channel_id))

    def expire_reply_tokens(self, channel_id) -> None:
        self.store.run(update(reply_tokens).where(reply_tokens.c.channel_id == channel_id)
                       .values(expires_at=now() - 1))

    def user_count(self, channel_id) -> int:
        """Users who ever added the account (friends and those who blocked it)."""
        with self.store.engine.begin() as conn:
            return int(conn.execute(select(func.count()).where(users.c.channel_id == str(channel_id))).scalar() or 0)

    def received_counts(self, channel_id, user_ids) -> dict:
        """``{user_id: messages received}`` for the given users (message objects that arrived)."""
        if not user_ids:
            return {}
        rows = self.store.rows(select(messages.c.user_id, func.count().label("received"))
                               .where(messages.c.channel_id == str(channel_id), messages.c.user_id.in_(user_ids),
                                      messages.c.delivered.is_(True)).group_by(messages.c.user_id))
        return {row["user_id"]: row["received"] for row in rows}

    def friend_count(self, channel_id) -> int:
        """Friends the account has now (blocked users not counted)."""
        with self.store.engine.begin() as conn:
            return int(conn.execute(select(func.count()).where(users.c.channel_id == str(channel_id),
                                                               users.c.following.is_(True))).scalar() or 0)

    def counts(self) -> dict:
        """Friends per channel, for the control page."""
        rows = self.store.rows(select(users.c.channel_id, func.count().label("friends"))
                               .where(users.c.following.is_(True)).group_by(users.c.channel_id))
        return {row["channel_id"]: row["friends"] for row in rows}

    # ---- inner workings ------------------------------------------------------------------------------------

    def _channel_row(self, channel_id) -> dict:
        row = self.store.row(select(channels).where(channels.c.channel_id == str(channel_id)))
        if row is None:
            raise SandboxError(f"no sandbox channel has the ID {channel_id}", 404)
        return row

    def _user_row(self, channel_id, user_id) -> dict:
        self._channel_row(channel_id)
        row = self.store.row(select(users).where(users.c.channel_id == str(channel_id),
                                                 users.c.user_id == user_id))
        if row is None:
            raise SandboxError(f"{user_id} never followed this account", 404)
        return row

    def _content_row(self, channel_id, message_id) -> dict:
        self._channel_row(channel_id)
        row = self.store.row(select(contents).where(contents.c.channel_id == str(channel_id),
                                                    contents.c.message_id == str(message_id)))
        if row is None:
            raise SandboxError(f"no message {message_id} with content was sent to this account", 404)
        return row

    def _check_url(self, url):
        problem = deliver.url_problem(url)
        if problem == "not_https":
            raise SandboxError("LINE only accepts https webhook URLs (the sandbox also takes loopback http)")
        if problem:
            raise SandboxError("not a valid webhook URL (at most 500 characters)")

    def _event(self, channel_id, kind, user_id, **fields) -> dict:
        event = {"type": kind, **fields, "webhookEventId": ids.ulid(),
                 "deliveryContext": {"isRedelivery": False}, "timestamp": int(now() * 1000),
                 "source": {"type": "user", "userId": user_id}, "mode": "active"}
        if kind in ("follow", "message"):
            token = ids.reply_token()
            self.store.run(insert(reply_tokens).values(
                token=token, channel_id=channel_id, user_id=user_id, expires_at=now() + self.reply_token_ttl,
                used=False))
            event["replyToken"] = token
        return event

    def _act(self, channel_id, user_id, event) -> dict:
        """After a user's action: send its event if the channel's webhook is on and has a URL."""
        channel = self._channel_row(channel_id)
        result = {"user": self.user(channel_id, user_id), "event": event, "delivery": None, "skipped": None}
        if not channel["endpoint"]:
            result["skipped"] = "no webhook URL is set"
        elif not channel["webhook_active"]:
            result["skipped"] = "“Use webhook” is off"
        else:
            payload = {"destination": channel["bot_user_id"], "events": [event]}
            result["delivery"] = self._post(channel, "events", channel["endpoint"], payload)
        return result

    def _post(self, channel, kind, url, payload) -> dict:
        body = deliver.encode(payload)
        outcome = deliver.post(url, body, channel["secret"], timeout=self.webhook_timeout)
        self.store.run(insert(deliveries).values(
            channel_id=channel["channel_id"], kind=kind, url=url, body=body.decode("utf-8"),
            success=outcome["success"], status_code=outcome["statusCode"], reason=outcome["reason"],
            detail=outcome["detail"][:500], response_body=outcome["responseBody"], at=now(),
        ))
        return outcome


def _looks_like_user_id(value) -> bool:
    return (isinstance(value, str) and len(value) == 33 and value[0] == "U"
            and all(c in "0123456789abcdef" for c in value[1:]))


def _channel_dict(row) -> dict:
    failing = row["fail_status"] is not None and (row["fail_times"] is None or row["fail_times"] > 0)
    return {
        "channelId": row["channel_id"],
        "channelSecret": row["secret"],
        "botUserId": row["bot_user_id"],
        "basicId": row["basic_id"],
        "premiumId": row["premium_id"],
        "displayName": row["display_name"],
        "pictureUrl": row["picture_url"],
        "endpoint": row["endpoint"],
        "webhookActive": row["webhook_active"],
        "chatMode": row["chat_mode"],
        "markAsReadMode": mark_as_read_mode(row["chat_mode"]),
        "tokensIssued": row["tokens_issued"],
        "quota": quota_of(row),
        "insightLag": row.get("insight_lag"),
        "failure": {"status": row["fail_status"] if failing else None, "times": row["fail_times"],
                    "delay": row["fail_delay"], "retryAfter": row["fail_retry_after"] if failing else None},
    }


def _user_dict(row) -> dict:
    return {
        "userId": row["user_id"],
        "displayName": row["display_name"],
        "pictureUrl": row["picture_url"],
        "statusMessage": row["status_message"],
        "language": row["language"],
        "following": row["following"],
        "followedAt": row["followed_at"],
        "blockedAt": row["blocked_at"],
    }


def mark_as_read_mode(chat_mode: str) -> str:
    # LINE: "If the chat is set to Off, auto is returned. If the chat is set to On, manual is returned."
    return "manual" if chat_mode == "chat" else "auto"


def quota_of(row) -> dict:
    """A channel's quota as LINE's GET /v2/bot/message/quota states it (value None for type none)."""
    if row.get("quota_type") == "none":
        return {"type": "none", "value": None}
    value = row.get("quota_value")
    return {"type": "limited", "value": FREE_QUOTA if value is None else value}


def month_bounds(at: float) -> tuple[float, float]:
    """The calendar month (Japan time) holding ``at``, as epoch seconds [start, end)."""
    day = time.gmtime(at + JST)
    start = calendar.timegm((day.tm_year, day.tm_mon, 1, 0, 0, 0)) - JST
    year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
    return start, calendar.timegm((year, month, 1, 0, 0, 0)) - JST


def _number(value, name, low, high):
    if isinstance(value, bool):
        raise SandboxError(f"{name} is a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SandboxError(f"{name} is a number") from None
    if not low <= number <= high:
        raise SandboxError(f"{name} is between {low} and {high}")
    return number


def _message_fields(message_type, fields, content, content_type) -> dict:
    """The event fields of a user's message (LINE's order and names), and the content kept for download."""
    out, data = {}, None
    if message_type == "text":
        text = fields.get("text")
        if not isinstance(text, str) or not text:
            raise SandboxError("say what? The text is empty")
        out["text"] = text
    elif message_type == "sticker":
        kind = fields.get("stickerResourceType", "STATIC")
        if kind not in STICKER_RESOURCE_TYPES:
            raise SandboxError(f"stickerResourceType is one of {', '.join(STICKER_RESOURCE_TYPES)}")
        out.update(packageId=str(fields.get("packageId") or "446"), stickerId=str(fields.get("stickerId") or "1988"),
                   stickerResourceType=kind)
        if fields.get("keywords") is not None:
            keywords = fields["keywords"]
            if not isinstance(keywords, list) or len(keywords) > 15 or not all(isinstance(k, str) for k in keywords):
                raise SandboxError("keywords are at most 15 strings")
            out["keywords"] = keywords
        if fields.get("text") is not None:
            if kind != "MESSAGE" or not isinstance(fields["text"], str) or len(fields["text"]) > 100:
                raise SandboxError("only a message sticker carries text, at most 100 characters")
            out["text"] = fields["text"]
    elif message_type in ("image", "video", "audio"):
        if message_type != "image":
            out["duration"] = int(_number(fields.get("duration", 3000 if message_type == "video" else 2000),
                                          "duration", 0, 24 * 3600 * 1000))
        out["contentProvider"] = {"type": "line"}
        if message_type == "image" and fields.get("imageSet") is not None:
            image_set = fields["imageSet"]
            if not isinstance(image_set, dict) or not isinstance(image_set.get("id"), str):
                raise SandboxError("imageSet is {\"id\": …, \"index\": …, \"total\": …}")
            out["imageSet"] = image_set
    elif message_type == "file":
        name = fields.get("fileName") or samples.DEFAULT_FILE_NAME
        if not isinstance(name, str) or len(name) > 255:
            raise SandboxError("fileName is a name of at most 255 characters")
        size = fields.get("fileSize")
        if size is not None:
            size = int(_number(size, "fileSize", 1, MAX_CONTENT_BYTES))
            if content is not None and size != len(content):
                raise SandboxError("fileSize differs from the content's length")
        if content is None:
            data, guessed = samples.content_for("file", name, size)
            content_type = content_type or guessed
        out.update(fileName=name, fileSize=len(content) if content is not None else len(data))
    elif message_type == "location":
        merged = {**SAMPLE_LOCATION, **{key: value for key, value in fields.items() if value is not None}}
        for key in ("title", "address"):
            if not isinstance(merged[key], str):
                raise SandboxError(f"{key} is text")
        out.update(title=merged["title"], address=merged["address"],
                   latitude=_number(merged["latitude"], "latitude", -90, 90),
                   longitude=_number(merged["longitude"], "longitude", -180, 180))
    if message_type in WITH_CONTENT:
        if content is not None:
            if not isinstance(content, (bytes, bytearray)) or len(content) > MAX_CONTENT_BYTES:
                raise SandboxError(f"content is bytes, at most {MAX_CONTENT_BYTES}")
            data = bytes(content)
            content_type = content_type or samples.content_for(message_type, out.get("fileName"))[1]
        elif data is None:
            data, guessed = samples.content_for(message_type)
            content_type = content_type or guessed
    return {"fields": out, "data": data, "content_type": content_type}
