"""Step 7, the friend test: someone adds the account as a friend and LINE tells us. It is the proof that the
whole chain works, so it waits for every step before it; a message from someone who is already a friend proves
the webhook too, and then the page says how to make LINE send a new "follow"."""
import segno
from flask_babel import gettext as _, lazy_gettext as _l

from ..extensions import db
from ..line.client import client_for
from ..line.problems import LineProblem
from ..line.store import event_time
from ..models import Contact, StepState, iso_utc
from .context import StepResult, latest_event
from .registry import Step
from .state import State

# Everything "connected" needs: the friend test can only succeed when these are right.
DEPENDS_ON = ("prepare", "credentials", "webhook_url", "response_settings")


def _who(channel, event):
    contact = db.session.scalar(db.select(Contact).filter_by(
        channel_id=channel.id, line_user_id=event.source_user_id))
    user_id = event.source_user_id
    found = {"name": None, "user_id": user_id, "at": iso_utc(event_time(event.timestamp))}
    # The tester's LINE name: the contact's, else the name this step found before for the same friend, else
    # LINE's profile, asked once per friend (the verdict is kept, so a name missing when it is first made would
    # stay missing, and a check every 15 minutes must not ask again). Only if LINE will not say, a short form of
    # the 33-character user ID names the friend.
    if contact is not None and contact.display_name:
        found["name"] = contact.display_name
    else:
        before = _stored(channel)
        if before.get("user_id") == user_id and before.get("asked"):
            found["name"] = before.get("name") if before.get("named") else None
        else:
            found["name"] = _profile_name(channel, user_id)
        found["asked"] = True
    found["named"] = found["name"] is not None
    found["name"] = found["name"] or f"{user_id[:5]}…{user_id[-4:]}"
    return found


def _stored(channel):
    row = db.session.scalar(db.select(StepState).filter_by(shop_id=channel.shop_id, key="test_friend"))
    return dict(row.detail or {}) if row is not None else {}


def _profile_name(channel, user_id):
    """The friend's displayName from LINE's profile API, or None when LINE cannot give it now."""
    try:
        return client_for(channel).get_profile(user_id).get("displayName") or None
    except LineProblem:
        return None


def check(ctx):
    if ctx.channel is None:
        return StepResult("test_friend", State.TODO, "no_credentials", fix="credentials")
    blocker = ctx.unmet(*DEPENDS_ON)
    if blocker is not None:
        return ctx.waiting_for("test_friend", blocker)
    since = ctx.channel.connected_at
    follow = latest_event(ctx.channel, "follow")
    if follow is not None and (follow.received_at >= since or ctx.results["webhook_url"].done):
        # A follow on this connection; or an earlier one, with this connection proven by LINE since.
        return StepResult("test_friend", State.DONE, "follow_received", _who(ctx.channel, follow))
    message = latest_event(ctx.channel, "message", since=since)
    if message is not None:
        return StepResult("test_friend", State.TODO, "friend_message_received", _who(ctx.channel, message))
    if follow is not None:
        # The connection was entered again after the last follow: nothing shows yet that it works now.
        return StepResult("test_friend", State.TODO, "reconnected_unproven", {"at": iso_utc(since)},
                          fix="webhook_url")
    return StepResult("test_friend", State.TODO, "no_follow_yet")


def qr_svg(channel):
    return segno.make(channel.add_friend_url, error="m").svg_inline(
        scale=5, border=2, omitsize=True, title=_("QR code to add %(name)s as a friend",
                                                  name=channel.display_name or ""))


def _context(page):
    channel = page.channel
    if channel is None or not channel.add_friend_url:
        return {"add_friend_url": None, "qr_svg": None, "last_event": None}
    return {"add_friend_url": channel.add_friend_url, "qr_svg": qr_svg(channel), "last_event": latest_event(channel)}


STEP = Step(
    "test_friend", _l("Test by adding a friend"), check, depends_on=DEPENDS_ON, context=_context,
    reasons={
        "no_follow_yet": _l("Waiting for someone to add the account as a friend."),
        "follow_received": _l("%(name)s added the account as a friend at %(at_local)s. It works!"),
        "friend_message_received": _l("%(name)s sent a message at %(at_local)s, so LINE's messages reach the "
                                      "CRM. %(name)s is already a friend, so LINE will not say “new friend”: "
                                      "block the account and unblock it to finish the test."),
        "reconnected_unproven": _l("The Channel ID and secret were entered again at %(at_local)s. Have LINE "
                                   "test the webhook URL (step %(fix_number)s), or have someone add the account "
                                   "as a friend or send it a message, to show that it works again."),
    },
)
