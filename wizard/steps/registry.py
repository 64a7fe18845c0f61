"""The wizard as data: each step is one ``Step`` object, and the registry keeps them in wizard order.

A step holds everything about itself: its title, template, check, the steps it depends on, its page context
(forms pre-filled from what is saved), the actions its page offers and the sentences of its reason codes.
Views, the status JSON, the staff list and ``line doctor`` all walk this one registry, so adding a step is one
``Step`` in a module of its own, one line in ``_wizard()`` below, and its template.
"""
from dataclasses import dataclass, field
from typing import Callable, Mapping

from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class Action:
    """A POST a step's page accepts (``action=<name>``). ``handler(page)`` returns a response or None (then
    the page is redirected to itself). With ``recheck``, the step and what it depends on are asked again right
    after, and the owner is told what changed; with ``advance``, a step that is then done moves on to the next.
    A handler returning False skips the re-check (it has already said why nothing happened)."""
    handler: Callable
    recheck: bool = True
    advance: bool = False


@dataclass(frozen=True, eq=False)
class Step:
    key: str
    title: object
    check: Callable
    # Steps whose results this step's check reads; they are always evaluated first.
    depends_on: tuple = ()
    # Checks that call LINE are cached for CHECK_MAX_AGE; the others read only our database and always run.
    live: bool = False
    # page -> dict of what the template needs beyond the common context (forms, QR codes …).
    context: Callable = field(default=lambda page: {})
    actions: Mapping[str, Action] = field(default_factory=dict)
    # reason code -> sentence (lazy gettext); the status JSON and every page take them from here.
    reasons: Mapping[str, object] = field(default_factory=dict)
    template: str | None = None

    @property
    def template_name(self):
        return self.template or f"wizard/{self.key}.html"


CONNECTED_KEY = "connected"
CONNECTED_TITLE = _l("Summary")


class Registry:
    """The ordered steps. ``add``/``remove`` exist for extensions and tests; everything else is derived."""

    def __init__(self, steps=()):
        self._steps = list(steps)

    @property
    def steps(self):
        return list(self._steps)

    def __iter__(self):
        return iter(self._steps)

    def __len__(self):
        return len(self._steps)

    def __contains__(self, key):
        return any(step.key == key for step in self._steps)

    def get(self, key):
        for step in self._steps:
            if step.key == key:
                return step
        raise KeyError(key)

    def add(self, step, before=None):
        if step.key in self or step.key == CONNECTED_KEY:
            raise ValueError(f"a step {step.key!r} exists already")
        at = self.number(before) - 1 if before else len(self._steps)
        self._steps.insert(at, step)

    def remove(self, key):
        self._steps.remove(self.get(key))

    @property
    def page_count(self):
        """Pages are numbered over the steps plus the final summary page."""
        return len(self._steps) + 1

    def number(self, key):
        for index, step in enumerate(self._steps, start=1):
            if step.key == key:
                return index
        return self.page_count

    def title(self, key):
        return CONNECTED_TITLE if key == CONNECTED_KEY else self.get(key).title

    def after(self, key):
        """The key of the page after ``key`` (the summary after the last step)."""
        index = self.number(key)
        return self._steps[index].key if index < len(self._steps) else CONNECTED_KEY

    def before(self, key):
        index = self.number(key) - 1
        return self._steps[index - 1].key if index > 0 else None

    def evaluation_order(self):
        """Wizard order, except that a step always comes after the steps it depends on."""
        order, seen = [], set()

        def visit(step, path=()):
            if step.key in seen:
                return
            if step.key in path:
                raise ValueError(f"steps depend on each other in a circle: {' → '.join(path + (step.key,))}")
            for key in step.depends_on:
                visit(self.get(key), path + (step.key,))
            seen.add(step.key)
            order.append(step)

        for step in self._steps:
            visit(step)
        return order

    def reasons(self):
        merged = {}
        for step in self._steps:
            merged.update(step.reasons)
        return merged


def _wizard():
    from . import (create_account, credentials, customer_form, enable_messaging_api, prepare, response_settings,
                   test_friend, webhook_url)
    # The order of the setup document; each module's STEP says what it depends on. The customer form comes
    # before the friend test so that the first test friend receives the shop's form.
    return [prepare.STEP, create_account.STEP, enable_messaging_api.STEP, credentials.STEP, webhook_url.STEP,
            response_settings.STEP, customer_form.STEP, test_friend.STEP]


_registry = None


def registry():
    """The wizard's registry (built on first use, since the step modules import this one)."""
    global _registry
    if _registry is None:
        _registry = Registry(_wizard())
    return _registry

