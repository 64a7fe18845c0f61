"""Statuses as enums (wizard/statuses.py): a CHECK constraint on every shop state and every event, outbox and
media content status, so the database refuses a value the product does not know, whoever writes it.

The values are written out here, not read from the enums: this revision's constraints are what the code knew
when it was written; a later status is added by a later revision (drop the constraint, add it again).

On SQLite a constraint comes only with the table: batch mode copies each table once. On PostgreSQL each is one
ALTER TABLE that checks the rows already there. It is not split into ``NOT VALID`` and ``VALIDATE CONSTRAINT``:
the split pays only when the validation runs in a transaction of its own, while this migration, like every
other, runs in one transaction (env.py: nothing half done, and no lock waited on longer than
MIGRATION_LOCK_TIMEOUT), in which the ADD's exclusive lock is held until the end anyway. The check is one
comparison per row: about 0.2 s per million webhook events here, the largest of these tables (retention keeps
them for RETAIN_EVENTS_DAYS), while the receiver's inserts into it wait.

Revision ID: i15e_status_checks
Revises: i14e_contacts_order
Create Date: 2026-12-07 01:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'i15e_status_checks'
down_revision = 'i14e_contacts_order'
branch_labels = None
depends_on = None

SHOP_STATES = ('onboarding', 'healthy', 'attention', 'broken', 'dormant')
EVENT_STATUSES = ('pending', 'processing', 'processed', 'failed', 'unprocessable')
OUTBOX_STATUSES = ('queued', 'sending', 'sent', 'failed', 'dead', 'unknown')
CONTENT_STATUSES = ('pending', 'ready', 'too_large', 'over_quota', 'failed', 'expired')

# table: [(constraint, column, values)], the names as models.py gives them (statuses.status_type).
CHECKS = {
    'shop_health': [('ck_shop_health_state', 'state', SHOP_STATES)],
    'shop_state_changes': [('ck_shop_state_changes_state', 'state', SHOP_STATES),
                           ('ck_shop_state_changes_previous_state', 'previous_state', SHOP_STATES)],
    'shop_checks': [('ck_shop_checks_state', 'state', SHOP_STATES)],
    'alerts': [('ck_alerts_state', 'state', SHOP_STATES)],
    'webhook_events': [('ck_webhook_events_status', 'status', EVENT_STATUSES)],
    'outbox': [('ck_outbox_status', 'status', OUTBOX_STATUSES)],
    'message_contents': [('ck_message_contents_status', 'status', CONTENT_STATUSES)],
}


def _condition(column, values):
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade():
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, column, values in checks:
                batch_op.create_check_constraint(name, _condition(column, values))


def downgrade():
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _column, _values in checks:
                batch_op.drop_constraint(name, type_='check')
