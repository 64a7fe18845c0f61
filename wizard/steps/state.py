"""The four states a wizard step can be in, each with the label people read.

One enum for modules and templates alike: the JSON and the database keep the plain string values, pages show
``state.label`` (translated), and ``line doctor`` shows ``state.mark``.
"""
from enum import StrEnum

from flask_babel import lazy_gettext as _l


class State(StrEnum):
    TODO = "todo"
    DONE = "done"
    ACTION = "action_needed"
    UNVERIFIABLE = "unverifiable"

    @property
    def label(self):
        return _LABELS[self]

    @property
    def mark(self):
        """A three-character mark for the terminal (``line doctor``)."""
        return _MARKS[self]


_LABELS = {
    State.TODO: _l("To do"),
    State.DONE: _l("Done"),
    State.ACTION: _l("Needs action"),
    State.UNVERIFIABLE: _l("Cannot be checked"),
}
_MARKS = {State.TODO: "...", State.DONE: "OK ", State.ACTION: "!! ", State.UNVERIFIABLE: "?? "}
