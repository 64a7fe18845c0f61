"""LINE's implementation of the outgoing core's sender (wizard/outgoing/sender.py): reply and push through
the LINE client, LINE's answers reduced to what the outbox decides on.

It imports nothing of the outgoing core (the interface is a shape, not a base class): line/ stays below every
domain, and the app factory hands this sender to the core.
"""
from .client import client_for
from .problems import LineProblem, retryable


class LineSender:
    failure = LineProblem

    def reply(self, channel, token, messages):
        return _sent_ids(client_for(channel).reply(token, messages))

    def push(self, channel, contact, messages, retry_key):
        return _sent_ids(client_for(channel).push(contact.line_user_id, messages, retry_key=retry_key))

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
