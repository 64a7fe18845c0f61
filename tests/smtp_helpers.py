"""A real SMTP server for the mail tests (aiosmtpd on a free loopback port), and reading what it received.

``smtp_server`` records every message it accepts (``.messages``: ``email.message.EmailMessage`` objects, with
``.envelope`` of each), can require a login (``.require_login(user, password)``) and can be told to refuse
every mail (``.refuse = "550 …"``). ``smtp_app`` is the app configured to send through it.
"""
import email
import email.policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers import free_port


class Recorder:
    def __init__(self):
        self.messages = []
        self.envelopes = []
        self.refuse = None
        self.login = None
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return self.refuse
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and self.login is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self.login)
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)  # aiosmtpd then answers 535 itself


class SmtpServer:
    def __init__(self):
        self.recorder = Recorder()
        self.port = free_port()
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port,
                                     authenticator=self.recorder.authenticate, auth_require_tls=False,
                                     auth_exclude_mechanism=["LOGIN"])  # PLAIN: one try, one answer
        self.controller.start()

    @property
    def messages(self):
        return self.recorder.messages

    def url(self, user=None, password=None):
        credentials = f"{user}:{password}@" if user else ""
        return f"smtp://{credentials}127.0.0.1:{self.port}"

    def stop(self):
        self.controller.stop()


@pytest.fixture
def smtp_server():
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def smtp_app(app, smtp_server):
    app.config.update(MAIL_URL=smtp_server.url(), MAIL_FROM="Wizard <wizard@example.com>")
    return app
