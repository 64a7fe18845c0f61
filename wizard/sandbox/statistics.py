"""Per-unit statistics: ``GET /v2/bot/message/aggregation/info`` and ``/list`` (the unit names used this month)
and ``GET /v2/bot/insight/message/event/aggregation`` (impressions and clicks of the sends named with one
``customAggregationUnits`` name, sent between two Japan-time days).

Nobody opens a sandbox message, so the numbers are made up, but plausibly and deterministically: a share of the
friends reached sees the message (55–84 %, fixed per unit name), some of them more than once, fewer see the
later bubbles, and 8–22 % of those who saw it open each URL of its buttons and actions. The same sends always
give the same numbers, so a page showing them can be tested.
"""
import calendar
import hashlib
import time

from flask import jsonify, request
from sqlalchemy import select

from .platform import JST, _authenticated, bp, error, store
from .sending import UNIT, units_this_month
from .store import sends

MAX_DAYS = 30
LIST_LIMIT = 100


@bp.get("/v2/bot/message/aggregation/info")
def aggregation_info():
    channel = _authenticated()
    return jsonify(numOfCustomAggregationUnits=len(units_this_month(channel["channel_id"])))


@bp.get("/v2/bot/message/aggregation/list")
def aggregation_list():
    """The unit names used this month, ``limit`` at a time (at most 100); ``next`` continues the list."""
    channel = _authenticated()
    limit, start = request.args.get("limit", str(LIST_LIMIT)), request.args.get("start", "0")
    if not limit.isdecimal() or not 1 <= int(limit) <= LIST_LIMIT:
        raise error(400, "The request parameter 'limit' is invalid",
                    [{"message": f"must be between 1 and {LIST_LIMIT}", "property": "limit"}])
    if not start.isdecimal():
        raise error(400, "The request parameter 'start' is invalid",
                    [{"message": "invalid continuation token", "property": "start"}])
    names = units_this_month(channel["channel_id"])
    begin, end = int(start), int(start) + int(limit)
    answer = {"customAggregationUnits": names[begin:end]}
    if end < len(names):
        answer["next"] = str(end)
    return jsonify(answer)


def _day(name):
    value = request.args.get(name, "")
    try:
        if len(value) == 8 and value.isdecimal():
            return calendar.timegm(time.strptime(value, "%Y%m%d")) - JST
    except ValueError:
        pass
    raise error(400, f"The request parameter '{name}' is invalid",
                [{"message": "must be yyyyMMdd", "property": name}])


@bp.get("/v2/bot/insight/message/event/aggregation")
def statistics_per_unit():
    channel = _authenticated()
    unit = request.args.get("customAggregationUnit", "")
    if not UNIT.match(unit):
        raise error(400, "The request parameter 'customAggregationUnit' is invalid",
                    [{"message": 'must match "^[a-zA-Z0-9_]{1,30}$"', "property": "customAggregationUnit"}])
    start, end = _day("from"), _day("to") + 86400
    if end <= start or end - start > (MAX_DAYS + 1) * 86400:
        raise error(400, "The request parameter 'to' is invalid",
                    [{"message": f"must be from 'from' to {MAX_DAYS} days later", "property": "to"}])
    found = store().rows(select(sends).where(
        sends.c.channel_id == channel["channel_id"], sends.c.unit == unit,
        sends.c.created_at >= start, sends.c.created_at < end).order_by(sends.c.id))
    return jsonify(made_up(unit, found))


def _share(unit, salt, low, spread) -> float:
    """A fraction in [low, low + spread) that only depends on the unit name (and what it is for)."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return low + (int.from_bytes(digest[:2], "big") % 1000) / 1000 * spread


def made_up(unit, found) -> dict:
    """LINE's ``GetStatisticsPerUnitResponse`` for ``found`` (rows of the sandbox's ``sends``)."""
    if not found:
        return {"overview": {"uniqueImpression": None, "uniqueClick": None, "uniqueMediaPlayed": None,
                             "uniqueMediaPlayed100Percent": None}, "messages": [], "clicks": []}
    reached = sum(send["delivered"] for send in found)
    seen = int(reached * _share(unit, "seen", 0.55, 0.30))
    bubbles = max(len(send["messages"]) for send in found)
    per_message = []
    for seq in range(1, bubbles + 1):
        unique = int(seen * (1 - 0.12 * (seq - 1)))
        per_message.append({"seq": seq, "impression": unique + unique // 5, "mediaPlayed": None,
                            "mediaPlayed25Percent": None, "mediaPlayed50Percent": None,
                            "mediaPlayed75Percent": None, "mediaPlayed100Percent": None,
                            "uniqueImpression": unique, "uniqueMediaPlayed": None,
                            "uniqueMediaPlayed25Percent": None, "uniqueMediaPlayed50Percent": None,
                            "uniqueMediaPlayed75Percent": None, "uniqueMediaPlayed100Percent": None})
    clicks, clicked = [], 0
    for seq, url in _urls(found):
        unique = int(seen * _share(unit, url, 0.08, 0.14))
        clicked = max(clicked, unique)
        clicks.append({"seq": seq, "url": url, "click": unique + unique // 4, "uniqueClick": unique,
                       "uniqueClickOfRequest": unique})
    overview = {"uniqueImpression": seen, "uniqueClick": clicked if clicks else None,
                "uniqueMediaPlayed": None, "uniqueMediaPlayed100Percent": None}
    return {"overview": overview, "messages": per_message, "clicks": clicks}


def _urls(found):
    """(bubble seq, URL) of every uri action in the sends' messages, each once, in order."""
    urls = []
    for send in found:
        for seq, message in enumerate(send["messages"], start=1):
            for url in _uris(message):
                if (seq, url) not in urls:
                    urls.append((seq, url))
    return urls


def _uris(value):
    if isinstance(value, dict):
        if value.get("type") == "uri" and isinstance(value.get("uri"), str):
            yield value["uri"]
        for child in value.values():
            yield from _uris(child)
    elif isinstance(value, list):
        for child in value:
            yield from _uris(child)
