"""A contact's LINE profile (name, picture, status message, language): fetched after a follow or before the
form, kept on the contact, and the language the contact is written to in (``contact_locale``).

Through the queue (``fetch_profile``, wizard/jobs.py) when no form went out (standby, the form not due): a few
tries while LINE is struggling (config.py ``BACKOFF["profile"]``); before the form, best effort, in the send.
"""
import logging

from flask import current_app

from ..extensions import db
from ..line.client import client_for
from ..line.problems import LineProblem
from ..models import Channel, Contact, utcnow

log = logging.getLogger(__name__)

# LINE's profile "language" (BCP 47 as LINE sends it) to our catalog names; anything else gets the default.
_LANGUAGES = {"en": "en", "zh-TW": "zh_Hant_TW", "zh-Hant": "zh_Hant_TW", "zh-HK": "zh_Hant_TW"}


def contact_locale(contact):
    """The catalog a contact is written to in: their LINE language when we have it, else the default."""
    default = current_app.config["BABEL_DEFAULT_LOCALE"]
    return _LANGUAGES.get(contact.language or "", default)


def refresh_profile(channel, contact):
    """Fill the contact from LINE's profile (the caller commits); returns the problem when LINE would not say."""
    try:
        profile = client_for(channel).get_profile(contact.line_user_id)
    except LineProblem as problem:
        log.info("profile of a contact of channel %s not fetched: %s", channel.id, problem.code)
        return problem
    contact.display_name = (profile.get("displayName") or contact.display_name or "")[:200] or None
    contact.picture_url = (profile.get("pictureUrl") or "")[:500] or None
    contact.status_message = profile.get("statusMessage") or None
    contact.language = (profile.get("language") or "")[:16] or None
    contact.profile_fetched_at = utcnow()
    return None


def fetch_profile(contact_id):
    """Fetch and save one contact's profile; returns the LineProblem if LINE would not give it."""
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        return None
    problem = refresh_profile(db.session.get(Channel, contact.channel_id), contact)
    db.session.commit()
    return problem
