"""``flask --app wizard line …``: connect a shop's channel, its webhook numbers, the event worker."""
from flask.cli import AppGroup

line_cli = AppGroup("line", help="Connect shops to LINE and inspect their webhook traffic.")
