"""Send plans (issue 16): the plan, its runs (one per plan and Taipei day, so a run happens once) and each
run's recipients with their outcome (the proof of who got it), with CHECK constraints on the states as
wizard/statuses.py names them.

Revision ID: i16d_send_plans
Revises: i15e_status_checks
Create Date: 2026-12-07 04:00:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'i16d_send_plans'
down_revision = 'i15e_status_checks'
branch_labels = None
depends_on = None

PLAN_STATES = ('draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled', 'failed')
OUTCOMES = ('pending', 'sent', 'no_consent', 'blocked', 'over_quota', 'failed', 'cancelled')


def _check(name, column, values):
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(value) for value in values)})", name=name)


def upgrade():
    op.create_table(
        'send_plans',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('shop_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('template_id', sa.Integer(), nullable=True),
        sa.Column('purpose', sa.String(length=10), nullable=False),
        sa.Column('audience', sa.JSON(), nullable=False),
        sa.Column('segment_id', sa.Integer(), nullable=True),
        sa.Column('send_at', sa.DateTime(), nullable=True),
        sa.Column('repeat', sa.String(length=16), nullable=True),
        sa.Column('hour', sa.Integer(), nullable=True),
        sa.Column('up_to_quota', sa.Boolean(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('unit', sa.String(length=30), nullable=True),
        sa.Column('idempotency', sa.String(length=140), nullable=True),
        sa.Column('cost_messages', sa.Integer(), nullable=True),
        sa.Column('quota_left', sa.Integer(), nullable=True),
        sa.Column('stats', sa.JSON(), nullable=True),
        sa.Column('stats_at', sa.DateTime(), nullable=True),
        sa.Column('created_by', sa.String(length=254), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=True),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('shop_id', 'idempotency', name='uq_send_plans_idempotency'),
        _check('ck_send_plans_state', 'state', PLAN_STATES),
    )
    op.create_index('ix_send_plans_due', 'send_plans', ['state', 'send_at'])
    op.create_index(op.f('ix_send_plans_shop_id'), 'send_plans', ['shop_id'])
    op.create_index(op.f('ix_send_plans_template_id'), 'send_plans', ['template_id'])
    op.create_table(
        'send_plan_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('plan_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('personal', sa.Boolean(), nullable=False),
        sa.Column('broadcast', sa.Boolean(), nullable=False),
        sa.Column('recipients', sa.Integer(), nullable=False),
        sa.Column('sent', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('no_consent', sa.Integer(), nullable=False),
        sa.Column('blocked', sa.Integer(), nullable=False),
        sa.Column('over_quota', sa.Integer(), nullable=False),
        sa.Column('cancelled', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['plan_id'], ['send_plans.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('plan_id', 'day', name='uq_send_plan_runs_day'),
        _check('ck_send_plan_runs_state', 'state', PLAN_STATES),
    )
    op.create_table(
        'send_plan_recipients',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('contact_id', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=10), nullable=False),
        sa.Column('outbox_id', sa.Integer(), nullable=True),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['send_plan_runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'contact_id', name='uq_send_plan_recipients_contact'),
        _check('ck_send_plan_recipients_outcome', 'outcome', OUTCOMES),
    )
    op.create_index('ix_send_plan_recipients_outcome', 'send_plan_recipients', ['run_id', 'outcome'])
    op.create_index(op.f('ix_send_plan_recipients_contact_id'), 'send_plan_recipients', ['contact_id'])
    op.create_index(op.f('ix_send_plan_recipients_outbox_id'), 'send_plan_recipients', ['outbox_id'])


def downgrade():
    op.drop_table('send_plan_recipients')
    op.drop_table('send_plan_runs')
    op.drop_table('send_plans')
