"""The LINE side, played by hand: ``Sandbox`` creates channels, flips their switches as a shop owner would in
LINE's consoles, and makes users follow, block or talk, sending the signed webhook LINE would send.

One object serves the control page, the JSON control API, the ``flask sandbox`` commands and tests alike.
Dicts use LINE's camelCase names (``channelId``, ``channelSecret``, ``botUserId``, ``basicId`` …).
"""
import json
import random

from sqlalchemy import delete, func, insert, select, update

from . import deliver, ids
from .store import Store, channels, deliveries, messages, now, reply_tokens, tokens, users

UNSET = object()
CHAT_MODES = ("chat", "bot")
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
               display_name=None) -> dict:
        """Change the channel as its owner would in LINE's consoles; an endpoint of "" or None removes it."""
        self._channel_row(channel_id)
        values = {}
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

    def users(self, channel_id) -> list[dict]:
        self._channel_row(channel_id)
        rows = self.store.rows(select(users).where(users.c.channel_id == channel_id)
                               .order_by(users.c.followed_at.desc()))
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
        user_id = user_id or self._latest_friend(channel_id)
        user = self._user_row(channel_id, user_id)
        if not user["following"]:
            raise SandboxError(f"{user_id} blocked this account and cannot send it messages", 409)
        message = {"id": ids.message_id(), "type": "text", "quoteToken": ids.quote_token(),
                   "markAsReadToken": ids.quote_token(), "text": text}
        return self._act(channel_id, user_id, self._event(channel_id, "message", user_id, message=message))

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

    def sent_messages(self, channel_id, user_id=None) -> list[dict]:
        """Messages our app sent by reply or push, oldest first: what customers received."""
        query = select(messages).where(messages.c.channel_id == channel_id).order_by(messages.c.id)
        if user_id:
            query = query.where(messages.c.user_id == user_id)
        return [{
            "id": row["message_id"], "to": row["user_id"], "kind": row["kind"], "message": row["message"],
            "delivered": row["delivered"], "retryKey": row["retry_key"], "at": row["created_at"],
        } for row in self.store.rows(query)]

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
        "failure": {"status": row["fail_status"] if failing else None, "times": row["fail_times"],
                    "delay": row["fail_delay"]},
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
