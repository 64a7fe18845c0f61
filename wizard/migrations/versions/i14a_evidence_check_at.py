"""Passive evidence re-derives a shop's state when it arrives: shop_health.evidence_check_at, when the re-check
that new evidence asked for runs (one per burst, spaced per shop; watch/evidence.py).

Revision ID: i14a_evidence_check
Revises: b6ec23ade76e
Create Date: 2026-12-06 22:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'i14a_evidence_check'
down_revision = 'b6ec23ade76e'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('shop_health', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evidence_check_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('shop_health', schema=None) as batch_op:
        batch_op.drop_column('evidence_check_at')
