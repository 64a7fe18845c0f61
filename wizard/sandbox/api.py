"""JSON control API under ``/_sandbox/api``: the same LINE-side actions as the control page, for scripts.

Every answer is JSON; a refused action answers ``{"error": "…"}`` with 400, 404 or 409.
"""
from flask import Blueprint, current_app, jsonify, request

from .control import UNSET, SandboxError

bp = Blueprint("sandbox_api", __name__, url_prefix="/_sandbox/api")


def sandbox():
    return current_app.extensions["sandbox"]


def body() -> dict:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


@bp.errorhandler(SandboxError)
def _refused(exc):
    return jsonify(error=str(exc)), exc.status


@bp.get("/channels")
def list_channels():
    return jsonify(sandbox().channels())


@bp.post("/channels")
def create_channel():
    data = body()
    channel = sandbox().create_channel(
        display_name=data.get("displayName"), endpoint=data.get("endpoint"),
        webhook_active=data.get("webhookActive", True), chat_mode=data.get("chatMode", "chat"),
        channel_id=data.get("channelId"), channel_secret=data.get("channelSecret"),
        picture_url=data.get("pictureUrl"))
    return jsonify(channel), 201


@bp.get("/channels/<channel_id>")
def show_channel(channel_id):
    """The channel and its users (the newest ``limit``, 1,000 by default: a bench account has 100,000)."""
    limit = request.args.get("limit", 1000, type=int)
    return jsonify(dict(sandbox().channel(channel_id), users=sandbox().users(channel_id, limit),
                        friends=sandbox().friend_count(channel_id)))


@bp.patch("/channels/<channel_id>")
def update_channel(channel_id):
    data = body()
    channel = sandbox().update(
        channel_id, endpoint=data["endpoint"] if "endpoint" in data else UNSET,
        webhook_active=data.get("webhookActive"), chat_mode=data.get("chatMode"),
        reissue_secret=bool(data.get("reissueSecret")), display_name=data.get("displayName"),
        quota=data["quota"] if "quota" in data else UNSET,
        insight_lag=data["insightLag"] if "insightLag" in data else UNSET)
    return jsonify(channel)


@bp.get("/channels/<channel_id>/quota")
def quota(channel_id):
    """``{"type", "value", "totalUsage"}``; set the limit with PATCH ``{"quota": N}`` (``null``: no limit)."""
    return jsonify(sandbox().quota(channel_id))


@bp.post("/channels/<channel_id>/follow")
def follow(channel_id):
    data = body()
    return jsonify(sandbox().follow(channel_id, data.get("userId"), data.get("name"),
                                    data.get("language", "zh-TW"), deliver_event=data.get("deliver", True),
                                    at=data.get("at")))


@bp.post("/channels/<channel_id>/friends")
def make_friends(channel_id):
    """``{"count": N, "name"?}``: N new friends at once, no webhooks (a bench's 100,000 customers); answers
    ``{"userIds": [...]}`` in the order made."""
    data = body()
    made = sandbox().make_friends(channel_id, data.get("count"), name=data.get("name") or "好友")
    return jsonify(userIds=made), 201


@bp.put("/channels/<channel_id>/plan")
def plan(channel_id):
    """``{"plan": "free" | "3000" | "6000" | "none"}``: the account's plan, i.e. its monthly message limit."""
    return jsonify(sandbox().set_plan(channel_id, body().get("plan")))


@bp.get("/channels/<channel_id>/users/<user_id>/received")
def received(channel_id, user_id):
    """What one user received from the account, oldest first."""
    return jsonify(sandbox().received(channel_id, user_id))


@bp.get("/channels/<channel_id>/sends")
def sends(channel_id):
    """Send requests LINE accepted (push, multicast, narrowcast, broadcast), newest first."""
    return jsonify(sandbox().sends(channel_id, request.args.get("limit", 20, type=int)))


@bp.post("/channels/<channel_id>/unfollow")
def unfollow(channel_id):
    return jsonify(sandbox().unfollow(channel_id, body().get("userId")))


@bp.post("/channels/<channel_id>/say")
def say(channel_id):
    data = body()
    return jsonify(sandbox().say(channel_id, data.get("userId"), data.get("text", "")))


@bp.post("/channels/<channel_id>/send")
def send(channel_id):
    """``{"userId"?, "type", …the message's fields (LINE's names)…, "ready"?}``: a friend sends any kind of
    message; image, video, audio and file content is generated."""
    data = dict(body())
    user_id, message_type = data.pop("userId", None), data.pop("type", "text")
    ready = data.pop("ready", True)
    for taken in ("content", "content_type", "channel_id", "user_id", "message_type"):
        if taken in data:
            raise SandboxError(f"a message has no {taken}")
    return jsonify(sandbox().send(channel_id, user_id, message_type, ready=bool(ready), **data))


@bp.put("/channels/<channel_id>/contents/<message_id>/transcoding")
def transcoding(channel_id, message_id):
    found = sandbox().finish_transcoding(channel_id, message_id, body().get("status", "succeeded"))
    return jsonify({key: value for key, value in found.items() if key != "data"})


@bp.get("/channels/<channel_id>/read-marks")
def read_marks(channel_id):
    return jsonify(sandbox().read_marks(channel_id, request.args.get("userId")))


@bp.post("/channels/<channel_id>/redeliver")
def redeliver(channel_id):
    return jsonify(sandbox().redeliver(channel_id))


@bp.post("/channels/<channel_id>/verify")
def verify(channel_id):
    return jsonify(sandbox().verify(channel_id, body().get("endpoint")))


@bp.get("/channels/<channel_id>/messages")
def sent_messages(channel_id):
    sandbox().channel(channel_id)
    return jsonify(sandbox().sent_messages(channel_id, request.args.get("userId")))


@bp.get("/channels/<channel_id>/deliveries")
def deliveries(channel_id):
    sandbox().channel(channel_id)
    return jsonify(sandbox().deliveries(channel_id, request.args.get("limit", 50, type=int)))


@bp.put("/channels/<channel_id>/failure")
def fail(channel_id):
    data = body()
    return jsonify(sandbox().fail(channel_id, data.get("status"), times=data.get("times"),
                                  delay=data.get("delay", 0.0), retry_after=data.get("retryAfter")))


@bp.delete("/channels/<channel_id>/failure")
def heal(channel_id):
    return jsonify(sandbox().heal(channel_id))


@bp.post("/channels/<channel_id>/revoke-tokens")
def revoke_tokens(channel_id):
    sandbox().channel(channel_id)
    sandbox().revoke_tokens(channel_id)
    return jsonify({})


@bp.post("/channels/<channel_id>/expire-reply-tokens")
def expire_reply_tokens(channel_id):
    sandbox().channel(channel_id)
    sandbox().expire_reply_tokens(channel_id)
    return jsonify({})
