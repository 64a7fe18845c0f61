"""Statuses as enums (wizard/statuses.py): a CHECK constraint on every shop state and every event, outbox and
media content status, so the database refuses a value the product does not know, whoever writes it.

The values are written out here, not read from the enums: this revision's constraints are what the code knew
when it was written; a later status is added by a later revision (drop the constraint, add it again).

On SQLite a constraint comes only with the table: batch mode copies each table once. On PostgreSQL each is
added ``NOT VALID`` (no scan: it holds for every row written from now on) and then checked against the rows
already there with ``VALIDATE CONSTRAINT``, except on ``webhook_events``. Why: this migration, like every other,
runs in one transaction (env.py: nothing half done, and no lock waited on longer than MIGRATION_LOCK_TIMEOUT),
so the ADD's exclusive lock is held until the end and a validation inside it blocks the table's writers while
it scans: about 1.2 s per million rows measured here. For the other tables only the worker, the watch and
pages wait that long; on ``webhook_events`` the receiver would, with LINE waiting on the other end. Its rows
were all written by code that writes only these values, so its constraint stays NOT VALID (it still refuses any
other value from now on) and its lock is taken last, held only until the commit. Validating it later takes a
lock that lets the receiver write meanwhile, whenever an operator likes:
``ALTER TABLE webhook_events VALIDATE CONSTRAINT ck_webhook_events_status``.

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

# table: [(constraint, column, values)], the names as models.py gives them (statuses.status_type). The
# receiver's table last: on PostgreSQL its lock is then held for the shortest time.
CHECKS = {
    'shop_health': [('ck_shop_health_state', 'state', SHOP_STATES)],
    'shop_state_changes': [('ck_shop_state_changes_state', 'state', SHOP_STATES),
                           ('ck_shop_state_changes_previous_state', 'previous_state', SHOP_STATES)],
    'shop_checks': [('ck_shop_checks_state', 'state', SHOP_STATES)],
    'alerts': [('ck_alerts_state', 'state', SHOP_STATES)],
    'outbox': [('ck_outbox_status', 'status', OUTBOX_STATUSES)],
    'message_contents': [('ck_message_contents_status', 'status', CONTENT_STATUSES)],
    'webhook_events': [('ck_webhook_events_status', 'status', EVENT_STATUSES)],
}
# Written by the receiver while LINE waits: not validated here (see above).
NOT_VALIDATED = {'webhook_events'}


def _condition(column, values):
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade():
    postgresql = op.get_bind().dialect.name == 'postgresql'
    for table, checks in CHECKS.items():
        if postgresql:
            for name, column, values in checks:
                op.execute(f'ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({_condition(column, values)}) '
                           'NOT VALID')
                if table not in NOT_VALIDATED:
                    op.execute(f'ALTER TABLE {table} VALIDATE CONSTRAINT {name}')
            continue
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, column, values in checks:
                batch_op.create_check_constraint(name, _condition(column, values))


def downgrade():
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _column, _values in checks:
                batch_op.drop_constraint(name, type_='check')
