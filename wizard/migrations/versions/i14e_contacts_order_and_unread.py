"""Contacts of large shops: an index in the contacts page's order (channel, newest friend first), and
``contacts.seen_at`` (when someone of the shop last opened the conversation: later messages are unread).

The index is built inside the migration's transaction (not CONCURRENTLY, which would first commit every
migration before it and end env.py's lock timeout, so a failed build could leave a half-applied upgrade). Building
it blocks only new contacts (the worker's writes, never the webhook's), for about a second per 100,000 contacts.

Revision ID: i14e_contacts_order
Revises: i14b_request_ids
Create Date: 2026-12-06 22:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'i14e_contacts_order'
down_revision = 'i14b_request_ids'
branch_labels = None
depends_on = None

INDEX = 'ix_contacts_channel_recent'


def _columns():
    return ['channel_id', sa.text('coalesce(followed_at, created_at)'), 'id']


def upgrade():
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seen_at', sa.DateTime(), nullable=True))
    op.create_index(INDEX, 'contacts', _columns())


def downgrade():
    op.drop_index(INDEX, table_name='contacts')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('seen_at')
