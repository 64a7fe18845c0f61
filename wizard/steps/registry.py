"""The wizard as data: the ordered steps, each with its title, template, check and whether it calls LINE.

Views, the status JSON and ``line doctor`` all walk this one list, so a step is added or reordered here only.
"""
from dataclasses import dataclass
from typing import Callable

from flask_babel import lazy_gettext as _l

from . import checks


@dataclass(frozen=True)
class Step:
    key: str
    title: object
    check: Callable
    # Checks that call LINE are cached for CHECK_MAX_AGE; the others read only our database and always run.
    live: bool = False

    @property
    def template(self):
        return f"wizard/{self.key}.html"


STEPS = [
    Step("prepare", _l("Before you start"), checks.check_prepare),
    Step("create_account", _l("Create the LINE Official Account"), checks.check_create_account),
    Step("enable_messaging_api", _l("Enable the Messaging API"), checks.check_enable_messaging_api),
    Step("credentials", _l("Channel ID and Channel secret"), checks.check_credentials, live=True),
    Step("webhook_url", _l("Webhook URL"), checks.check_webhook_url, live=True),
    Step("response_settings", _l("Response settings"), checks.check_response_settings, live=True),
    Step("test_friend", _l("Test by adding a friend"), checks.check_test_friend),
]
CONNECTED_TITLE = _l("Connected")
# Pages are numbered over the steps plus the final "Connected" page.
PAGE_COUNT = len(STEPS) + 1
BY_KEY = {step.key: step for step in STEPS}
# Credentials are checked first because other steps' results follow from them.
EVALUATION_ORDER = ["credentials", "prepare", "create_account", "enable_messaging_api", "webhook_url",
                    "response_settings", "test_friend"]


def number(key):
    return [step.key for step in STEPS].index(key) + 1 if key in BY_KEY else PAGE_COUNT
