"""Step and check history for the console's shop page: step_changes (a wizard step's state changed) and
shop_checks (each live check against LINE, bounded per shop).

Revision ID: b6ec23ade76e
Revises: 569c4eb090ec
Create Date: 2026-12-06 00:10:04.822221

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b6ec23ade76e'
down_revision = '569c4eb090ec'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('shop_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('actor', sa.String(length=254), nullable=True),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('reason', sa.String(length=60), nullable=False),
    sa.Column('step', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('shop_checks', schema=None) as batch_op:
        batch_op.create_index('ix_shop_checks_shop_at', ['shop_id', 'at'], unique=False)

    op.create_table('step_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=60), nullable=True),
    sa.Column('previous_state', sa.String(length=20), nullable=True),
    sa.Column('previous_reason', sa.String(length=60), nullable=True),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('step_changes', schema=None) as batch_op:
        batch_op.create_index('ix_step_changes_shop_at', ['shop_id', 'at'], unique=False)


def downgrade():
    with op.batch_alter_table('step_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_step_changes_shop_at')

    op.drop_table('step_changes')
    with op.batch_alter_table('shop_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_shop_checks_shop_at')

    op.drop_table('shop_checks')
