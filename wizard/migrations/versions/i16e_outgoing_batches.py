"""Issue 16: multicast and broadcast chunks delivered exactly once (outgoing_batches), and the rate limits
every consumer shares (outgoing_pace). Two new tables: nothing existing is locked or rewritten.

Revision ID: i16e_outgoing_batches
Revises: i15e_status_checks
Create Date: 2026-12-07 04:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'i16e_outgoing_batches'
down_revision = 'i15e_status_checks'
branch_labels = None
depends_on = None

# The values this revision knows (statuses.BatchStatus when it was written).
BATCH_STATUSES = ('queued', 'sending', 'sent', 'failed', 'over_quota', 'cancelled')


def upgrade():
    statuses = ', '.join(repr(value) for value in BATCH_STATUSES)
    op.create_table('outgoing_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=30), nullable=False),
    sa.Column('owner_id', sa.BigInteger(), nullable=False),
    sa.Column('run_key', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('recipients', sa.JSON(), nullable=True),
    sa.Column('recipient_count', sa.Integer(), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('unit', sa.String(length=30), nullable=True),
    sa.Column('retry_key', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=32), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('called_at', sa.DateTime(), nullable=True),
    sa.Column('held_at', sa.DateTime(), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint(f'status IN ({statuses})', name='ck_outgoing_batches_status'),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('owner', 'owner_id', 'run_key', 'seq', name='uq_outgoing_batches_run'),
    sa.UniqueConstraint('retry_key')
    )
    with op.batch_alter_table('outgoing_batches', schema=None) as batch_op:
        batch_op.create_index('ix_outgoing_batches_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outgoing_batches_channel_id'), ['channel_id'], unique=False)
    op.create_table('outgoing_pace',
    sa.Column('key', sa.String(length=60), nullable=False),
    sa.Column('free_at_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade():
    op.drop_table('outgoing_pace')
    with op.batch_alter_table('outgoing_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outgoing_batches_channel_id'))
        batch_op.drop_index('ix_outgoing_batches_due')
    op.drop_table('outgoing_batches')
