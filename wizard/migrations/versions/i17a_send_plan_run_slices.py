"""A send plan's run is written in slices (plans/filling.py): whether it is still being written, how far its
recipients and their deliveries are, the highest contact id it covers and how many of them may be sent.
Five columns added to send_plan_runs, each with a default: existing runs were written whole (not filling).

Revision ID: i17a_send_plan_run_slices
Revises: i16d_merge_issue16
Create Date: 2026-12-08 04:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'i17a_send_plan_run_slices'
down_revision = 'i16d_merge_issue16'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('send_plan_runs') as batch_op:
        batch_op.add_column(sa.Column('filling', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('filled_to', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('queued_to', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('fill_last', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('sendable', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('send_plan_runs') as batch_op:
        batch_op.drop_column('sendable')
        batch_op.drop_column('fill_last')
        batch_op.drop_column('queued_to')
        batch_op.drop_column('filled_to')
        batch_op.drop_column('filling')
