"""Audiences (issue 16): saved segments (a name per shop for the segment builder's filters), and an index of
the messages by channel, direction and time for "last message from them within N days" (customers/segments.py).

The index is built inside the migration's transaction, as i14e's: it blocks only the worker's new messages
(never the webhook's receiver), for about a second per 300,000 messages measured here.

Revision ID: i16c_segments
Revises: i15e_status_checks
Create Date: 2026-12-07 04:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'i16c_segments'
down_revision = 'i15e_status_checks'
branch_labels = None
depends_on = None

INDEX = 'ix_messages_from_customer'


def upgrade():
    op.create_table(
        'segments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('shop_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('filters', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('shop_id', 'name', name='uq_segment_name_per_shop'),
    )
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segments_shop_id'), ['shop_id'], unique=False)
    op.create_index(INDEX, 'messages', ['channel_id', 'direction', 'sent_at', 'contact_id'])


def downgrade():
    op.drop_index(INDEX, table_name='messages')
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segments_shop_id'))
    op.drop_table('segments')
