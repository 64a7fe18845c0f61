"""Issue 14 item 24: the request id on each stored webhook delivery, and the queue consumers' heartbeats.

Revision ID: i14b_request_ids
Revises: i14a_evidence_check
Create Date: 2026-12-06 21:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'i14b_request_ids'
down_revision = 'i14a_evidence_check'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('consumer_heartbeats',
    sa.Column('consumer', sa.String(length=200), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('beat_at', sa.DateTime(), nullable=False),
    sa.Column('threads', sa.Integer(), nullable=False),
    sa.Column('threads_alive', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('consumer')
    )
    # Nullable, no default: on PostgreSQL adding it rewrites nothing and holds its lock only for an instant.
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=128), nullable=True))


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_column('request_id')
    op.drop_table('consumer_heartbeats')
