"""Issue 16's four parts (templates, segments, send plans, outgoing batches) were written side by side on the
same parent; this revision joins their heads so ``flask db upgrade`` has one head again. Nothing changes in
the schema here.

Revision ID: i16d_merge_issue16
Revises: i16b_message_templates, i16c_segments, i16d_send_plans, i16e_outgoing_batches
Create Date: 2026-12-07 04:00:00

"""

# revision identifiers, used by Alembic.
revision = 'i16d_merge_issue16'
down_revision = ('i16b_message_templates', 'i16c_segments', 'i16d_send_plans', 'i16e_outgoing_batches')
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
