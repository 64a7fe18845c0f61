"""The run written in slices (i17a) and the templates' uploads table (i17m) were written side by side on the
same parent; this revision joins their heads so ``flask db upgrade`` has one head again. Nothing changes in
the schema here.

Revision ID: i17z_merge_review_fixes
Revises: i17a_send_plan_run_slices, i17m_media_uploads
Create Date: 2026-12-07 08:00:00

"""

# revision identifiers, used by Alembic.
revision = 'i17z_merge_review_fixes'
down_revision = ('i17a_send_plan_run_slices', 'i17m_media_uploads')
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
