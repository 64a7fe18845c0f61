"""Shared steps for wizard tests: a shop owner signed in, a sandbox channel, the shop connected."""
import re

from wizard.extensions import db
from wizard.models import Shop


def page_text(response):
    return response.get_data(as_text=True)


def status_reason(response):
    match = re.search(r'class="status status-(\w+)"[^>]*data-reason="([\w]+)"', page_text(response))
    assert match, page_text(response)[:2000]
    return match.group(1), match.group(2)


def shop_row(app, slug):
    with app.app_context():
        return db.session.scalar(db.select(Shop).filter_by(slug=slug))


def connect(client, slug, channel):
    return client.post(f"/setup/{slug}/credentials", data={
        "action": "save", "channel_id": channel["channelId"], "channel_secret": channel["channelSecret"]})
