"""An alert's e-mails are held back: one per ``ALERT_EMAIL_HOURS`` while it stays open, none once staff have
acknowledged it, none while it is snoozed. Owners and staff of hundreds of shops must not be flooded by one
trouble, yet an open one must not be forgotten. A real shop on the LINE sandbox is broken (Chat mode switched
off), ``line check-all`` (which sends what is due) runs, and mail goes through a real SMTP server."""
from datetime import timedelta

import pytest
from sqlalchemy import update

from wizard.extensions import db
from wizard.models import Alert, utcnow

pytest_plugins = ["tests.smtp_helpers", "tests.watch_helpers"]


@pytest.fixture
def alerted(watched):
    """The shop broken and its alert's first e-mail sent, one to the owner and one to the assigned staff."""
    watched.sandbox.control.update(watched.id, chat_mode="bot")
    states, _ = watched.check_all()
    assert states[watched.slug]["state"] == "broken"
    assert _mails(watched) == (1, 1)
    return watched


def _mails(shop):
    return len(shop.mails_to(shop.owner)), len(shop.mails_to(shop.staff))


def _emailed_ago(shop, hours):
    """The alert's last e-mail went ``hours`` ago."""
    with shop.app.app_context():
        db.session.execute(update(Alert).values(last_emailed_at=utcnow() - timedelta(hours=hours)))
        db.session.commit()


def _alert_id(shop):
    [alert] = shop.alerts()
    assert alert.closed_at is None
    return alert.id


def test_an_open_alert_mails_again_after_alert_email_hours_not_before(alerted):
    hours = float(alerted.app.config["ALERT_EMAIL_HOURS"])
    _emailed_ago(alerted, hours - 0.5)
    alerted.check_all()
    assert _mails(alerted) == (1, 1)

    _emailed_ago(alerted, hours + 0.1)
    alerted.check_all()
    assert _mails(alerted) == (2, 2)
    again = alerted.mails_to(alerted.owner)[-1]
    assert f"/setup/{alerted.slug}/response_settings" in again.get_content()
    alerted.check_all()  # just sent: the next one is a day away
    assert _mails(alerted) == (2, 2)


def test_an_acknowledged_alert_sends_no_more_email_while_it_stays_open(alerted):
    alert_id = _alert_id(alerted)
    staff = alerted.staff_client()
    assert staff.post(f"/shops/{alerted.slug}/alerts/{alert_id}/acknowledge").status_code == 302
    _emailed_ago(alerted, 24 * 7)
    alerted.check_all()
    assert _mails(alerted) == (1, 1)
    assert _alert_id(alerted) == alert_id  # still open: the shop is still broken


def test_a_snoozed_alert_sends_nothing_until_its_snooze_ends_then_mails_again(alerted):
    alert_id = _alert_id(alerted)
    staff = alerted.staff_client()
    assert staff.post(f"/shops/{alerted.slug}/alerts/{alert_id}/snooze", data={"hours": "72"}).status_code == 302
    _emailed_ago(alerted, 48)  # a day since the last e-mail, but snoozed for three
    alerted.check_all()
    assert _mails(alerted) == (1, 1)

    with alerted.app.app_context():  # the snooze ends
        db.session.execute(update(Alert).values(snoozed_until=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    alerted.check_all()
    assert _mails(alerted) == (2, 2)


def test_the_alert_email_names_the_shop_and_the_problem_and_says_since_when_in_taipei_time(alerted):
    """Mails about different troubles differ in the inbox; the body says when it began, in Taipei time."""
    from wizard.i18n import localtime
    [mail] = alerted.mails_to(alerted.owner)
    [alert] = alerted.alerts()
    with alerted.app.app_context():
        opened = localtime(alert.opened_at)
    assert mail["Subject"] == "晴天烘焙坊：LINE 的「聊天」已關閉（已中斷）"
    body = mail.get_content()
    assert f"從 {opened}（台北時間）開始" in body
    assert "UTC" not in body
