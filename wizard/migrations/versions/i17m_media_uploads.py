"""The templates' pictures get a row each (media_uploads: shop, name, size, when), so only a shop's own stored
pictures are served and used, a shop's pictures have a limit, and those nothing uses are cleaned up
(plans/media.py). One new table; nothing existing is locked or rewritten.

The pictures templates and chunks already use get their row here, as used (kept at least 30 days after they
stop being used), so nothing LINE may fetch stops being served. Files no row names are deleted by the first
cleanup a day after they were written: they were uploads no template kept.

Revision ID: i17m_media_uploads
Revises: i16d_merge_issue16
Create Date: 2026-12-08 04:00:00

"""
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'i17m_media_uploads'
down_revision = 'i16d_merge_issue16'
branch_labels = None
depends_on = None

IN_TEXT = re.compile(r"/media/([A-Za-z0-9_-]{32})(?:-preview)?\.jpg")


def upgrade():
    op.create_table(
        'media_uploads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('shop_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('used', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('touched_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    with op.batch_alter_table('media_uploads', schema=None) as batch_op:
        batch_op.create_index('ix_media_uploads_shop_digest', ['shop_id', 'digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_media_uploads_touched_at'), ['touched_at'], unique=False)
    _rows_for_pictures_in_use()


def _rows_for_pictures_in_use():
    bind = op.get_bind()
    found = {}
    for shop_id, messages in bind.execute(sa.text("SELECT shop_id, messages FROM message_templates")):
        for name in _names(messages):
            found.setdefault(name, shop_id)
    for shop_id, messages in bind.execute(sa.text(
            "SELECT channels.shop_id, outgoing_batches.messages FROM outgoing_batches "
            "JOIN channels ON channels.id = outgoing_batches.channel_id")):
        for name in _names(messages):
            found.setdefault(name, shop_id)
    if not found:
        return
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    folder = _folder()
    table = sa.table('media_uploads', sa.column('shop_id', sa.Integer), sa.column('name', sa.String),
                     sa.column('size', sa.BigInteger), sa.column('used', sa.Boolean),
                     sa.column('created_at', sa.DateTime), sa.column('touched_at', sa.DateTime))
    op.bulk_insert(table, [{"shop_id": shop_id, "name": name, "size": _size(folder, name), "used": True,
                            "created_at": now, "touched_at": now} for name, shop_id in sorted(found.items())])


def _names(messages):
    text = messages if isinstance(messages, str) else json.dumps(messages)
    return set(IN_TEXT.findall(text or ""))


def _folder():
    try:
        from flask import current_app
        return Path(current_app.config.get("MEDIA_DIR") or Path(current_app.instance_path) / "media")
    except RuntimeError:  # no app (offline SQL): sizes are left at 0
        return None


def _size(folder, name):
    if folder is None:
        return 0
    total = 0
    for suffix in (".jpg", "-preview.jpg"):
        path = folder / f"{name}{suffix}"
        total += path.stat().st_size if path.is_file() else 0
    return total


def downgrade():
    with op.batch_alter_table('media_uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_uploads_touched_at'))
        batch_op.drop_index('ix_media_uploads_shop_digest')
    op.drop_table('media_uploads')
