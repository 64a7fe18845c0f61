"""E-mail: the one place that sends it (``send``), and the record of every mail (``MailMessage``).

``MAIL_URL`` says how: ``smtp://host:port`` (plain), ``smtps://host:465`` (TLS from the start) or
``smtp+starttls://user:password@host:587``; user and password, when given, log in (percent-encoded in the URL).
Unset (the embedded default) each mail is written as an .eml file into ``instance/outbox/``, so the demo needs
no mail server and a developer can open the invitation there. A deployment (an https ``PUBLIC_BASE_URL``) does
not start with ``MAIL_URL`` unset: invitations and alerts would become files on whichever machine sent them,
recorded as sent (issue 14, item 22). A staging system that wants the files says so: ``MAIL_URL=file://``
(``instance/outbox/``) or ``file:///some/directory``.

A mail server that is down, slow (``MAIL_TIMEOUT``) or refusing never becomes an error page: ``send`` records
the failure on the row (``error``) and returns it, and the caller says so in words. The row keeps the text
as sent, except the values passed as ``hide`` (the one-time invitation link), which are stored masked: staff
can read every mail without being able to use someone's invitation. Nothing else secret belongs in a mail.
"""
import logging
import os
import re
import smtplib
import ssl
import unicodedata
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flask import current_app

from .extensions import db
from .models import MailMessage, Shop, utcnow

log = logging.getLogger(__name__)

HIDDEN = "[link hidden: only the recipient has it]"
SCHEMES = {"smtp", "smtps", "smtp+starttls"}


class MailConfigError(ValueError):
    """MAIL_URL is not a URL this module can send through."""


def check_settings(app):
    """Refuse to start with mail settings that would lose mail: called once by ``create_app``."""
    from .config import ConfigError
    url = app.config["MAIL_URL"]
    if url and urlsplit(url).scheme != "file":
        try:
            _parse(url)
        except MailConfigError as exc:
            raise ConfigError(f"WIZARD_{exc}") from None
    elif not url and app.config["PUBLIC_BASE_URL"].startswith("https://") and not app.config.get("TESTING"):
        raise ConfigError("WIZARD_MAIL_URL is not set: invitations and alerts would be written as files on "
                          "this machine instead of being sent. Set it to the SMTP server "
                          "(smtp+starttls://user:password@host:587), or to file:// to keep them as files on "
                          "purpose (a staging system).")


def outbox_dir():
    url = current_app.config.get("MAIL_URL") or ""
    path = urlsplit(url).path if url.startswith("file:") else ""
    return Path(path) if path else Path(current_app.instance_path) / "outbox"


def transport_name():
    url = current_app.config.get("MAIL_URL")
    return "smtp" if url and not url.startswith("file:") else "file"


def _parse(url):
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise MailConfigError(f"MAIL_URL must be smtp://, smtps:// or smtp+starttls://host[:port], "
                              f"not {parts.scheme or '(no scheme)'}://…")
    default_port = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}[parts.scheme]
    return (parts.scheme, parts.hostname, parts.port or default_port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None)


def header_text(value):
    """A header's value on one line: control characters and line or paragraph separators (U+2028, U+2029,
    which Python's email package reads as line ends and refuses) become spaces. A shop's name goes into
    subjects; one stored before names were checked must not make every mail of that shop fail."""
    text = "".join(" " if unicodedata.category(char) in {"Cc", "Zl", "Zp"} else char for char in str(value))
    return re.sub(r"\s+", " ", text).strip()


def _message(to, subject, body_text):
    message = EmailMessage()
    sender = current_app.config["MAIL_FROM"]
    message["From"] = header_text(sender)
    message["To"] = header_text(to)
    message["Subject"] = header_text(subject)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    # Quoted-printable: the link stays readable ASCII in a saved .eml, and every server takes it.
    message.set_content(body_text, cte="quoted-printable")
    return message


def _send_smtp(message):
    scheme, host, port, user, password = _parse(current_app.config["MAIL_URL"])
    timeout = float(current_app.config["MAIL_TIMEOUT"])
    if scheme == "smtps":
        server = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(host, port, timeout=timeout)
    with server:
        if scheme == "smtp+starttls":
            server.starttls(context=ssl.create_default_context())
        if user:
            server.login(user, password or "")
        server.send_message(message)


def _write_file(message):
    folder = outbox_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    name = f"{stamp}-{message['Message-ID'].strip('<>').partition('@')[0]}.eml"
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it may hold an invitation
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes(message))
    return folder / name


def send(to, subject, body_text, *, kind, shop=None, hide=()):
    """Send one mail now and keep its row (added to the session; the caller commits).

    ``kind``: what it is ("invitation", …), for the staff list. ``hide``: values (a one-time link) that go out
    in the mail but are masked in the stored copy. Returns the ``MailMessage``; its ``error`` is None when
    the mail went out (SMTP accepted it, or the file was written)."""
    message = _message(to, subject, body_text)
    stored = body_text
    for value in hide:
        if value:
            stored = stored.replace(value, HIDDEN)
    row = MailMessage(to=to, subject=header_text(subject), kind=kind, body=stored, message_id=message["Message-ID"],
                      shop_id=shop.id if isinstance(shop, Shop) else shop, transport=transport_name())
    try:
        if row.transport == "smtp":
            _send_smtp(message)
        else:
            _write_file(message)
    except (OSError, smtplib.SMTPException, MailConfigError, ssl.SSLError) as exc:
        # One line without the URL's password: what the server (or the network) said.
        row.error = f"{type(exc).__name__}: {exc}"[:1000]
        log.warning("mail %s to %s not sent: %s", kind, to, row.error)
    row.sent_at = utcnow()
    db.session.add(row)
    db.session.flush()
    return row
