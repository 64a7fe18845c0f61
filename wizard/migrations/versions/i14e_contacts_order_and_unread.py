"""Contacts of large shops: an index in the contacts page's order (channel, newest friend first), and
``contacts.seen_at`` (when someone of the shop last opened the conversation: later messages are unread).

On PostgreSQL the index is built CONCURRENTLY, outside the migration's transaction: a shop with many
contacts keeps receiving follows and messages while it is built.

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
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.create_index(INDEX, 'contacts', _columns(), postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index(INDEX, 'contacts', _columns())


def downgrade():
    op.drop_index(INDEX, table_name='contacts')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('seen_at')
