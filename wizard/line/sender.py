"""LINE's implementation of the outgoing core's sender (wizard/outgoing/sender.py): reply, push, multicast and
broadcast through the LINE client, plus what a send plan asks before it goes (validate, quota, reach) and after
(statistics), LINE's answers reduced to what the outgoing core decides on.

It imports nothing of the outgoing core (the interface is a shape, not a base class): line/ stays below every
domain, and the app factory hands this sender to the core.
"""
from datetime import datetime, time, timedelta, timezone

from .client import client_for
from .problems import LineProblem, retryable

# Japan time: LINE's statistics days and quota months.
JST = timezone(timedelta(hours=9))
# LINE's per-unit statistics cover at most 31 days (from, and up to 30 days later).
STATISTICS_DAYS = 31
# The days back ``reach`` asks LINE's friend count for: yesterday, else the day before (LINE counts a day some
# hours after it ends). Each is a call of the follower insight, which LINE allows 60 times an hour.
REACH_DAYS = (1, 2)


class LineSender:
    failure = LineProblem

    def reply(self, channel, token, messages):
        return _sent_ids(client_for(channel).reply(token, messages))

    def push(self, channel, contact, messages, retry_key):
        return _sent_ids(client_for(channel).push(contact.line_user_id, messages, retry_key=retry_key))

    def multicast(self, channel, user_ids, messages, retry_key, unit=None):
        return client_for(channel).multicast(user_ids, messages, retry_key=retry_key, unit=unit)

    def broadcast(self, channel, messages, retry_key, unit=None):
        """``unit`` is accepted for the interface's sake and not sent: LINE counts per-unit statistics for
        push and multicast only."""
        return client_for(channel).broadcast(messages, retry_key=retry_key)

    def validate(self, channel, kind, messages):
        return client_for(channel).validate(kind, messages)

    def quota(self, channel):
        """``{"limit": int | None (no target limit), "used": int}`` for this month (two calls to LINE)."""
        client = client_for(channel)
        limit = client.quota()
        used = client.quota_consumption()
        return {"limit": limit["value"] if limit["type"] == "limited" else None,
                "used": int(used["totalUsage"] or 0)}

    def reach(self, channel, now=None):
        """How many friends a broadcast reaches, as LINE last counted them (the follower insight): yesterday's
        count (Japan time), else the day before's (``latest`` False), else ``friends`` None.

        A broadcast goes to every friend who has not blocked the account, and LINE counts each against the
        month: ``followers`` (first adds, never lowered) minus ``blocks``. Not ``targetedReaches``: those are
        only the friends whose age, gender and region LINE is sure of, fewer than a broadcast reaches. Friends
        who deleted their LINE account stay in ``followers``: the number errs on the safe side of the quota."""
        today = (now or datetime.now(timezone.utc)).astimezone(JST).date()
        client = client_for(channel)
        for back in REACH_DAYS:
            day = today - timedelta(days=back)
            answer = client.followers(f"{day:%Y%m%d}")
            if answer["status"] == "ready" and answer["followers"] is not None:
                until = datetime.combine(day + timedelta(days=1), time.min, JST).astimezone(timezone.utc)
                return {"friends": max(int(answer["followers"]) - int(answer["blocks"] or 0), 0), "day": day,
                        "until": until.replace(tzinfo=None), "latest": back == REACH_DAYS[0]}
        return {"friends": None, "day": None, "until": None, "latest": False}

    def statistics(self, channel, unit, day_from, day_to):
        """Impressions and clicks of the sends named ``unit`` between two dates (Japan time, LINE's days;
        longer spans are cut to LINE's 31 days from ``day_from``): ``{"impressions", "unique_impressions",
        "clicks", "unique_clicks"}``, 0 where LINE has no number (yet)."""
        day_to = min(day_to, day_from + timedelta(days=STATISTICS_DAYS - 1))
        answer = client_for(channel).statistics_per_unit(unit, f"{day_from:%Y%m%d}", f"{day_to:%Y%m%d}")
        overview = answer.get("overview") or {}
        return {
            "impressions": sum(m.get("impression") or 0 for m in answer.get("messages") or []),
            "unique_impressions": overview.get("uniqueImpression") or 0,
            "clicks": sum(c.get("click") or 0 for c in answer.get("clicks") or []),
            "unique_clicks": overview.get("uniqueClick") or 0,
        }

    def token_refused(self, problem):
        """LINE refuses a used or expired reply token with 400: nothing went out."""
        return problem.status == 400

    def maybe_arrived(self, problem):
        """No answer seen (a timeout or LINE's 5xx): the reply may have gone out."""
        return problem.code == "timeout" or (problem.status or 0) >= 500

    def retryable(self, problem):
        return retryable(problem)


def _sent_ids(result):
    """LINE's ids of the messages sent, in order (``sentMessages``)."""
    return [str(m.get("id"))[:40] for m in (result or {}).get("sentMessages", []) if isinstance(m, dict)]
