"""``flask --app wizard line …``: a shop's webhook numbers and the event worker. (``line connect`` and
``line doctor`` are the wizard's, in ``steps/commands.py``: connecting a shop is more than talking to LINE.)"""
import click
from flask.cli import AppGroup

from ..extensions import db
from ..models import Shop

line_cli = AppGroup("line", help="Connect shops to LINE and inspect their webhook traffic.")


def shop_or_fail(slug):
    shop = db.session.scalar(db.select(Shop).filter_by(slug=slug.strip().lower()))
    if shop is None:
        raise click.ClickException(f"No shop has the code {slug}.")
    return shop


@line_cli.command("stats")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for scripts and checks).")
def stats_command(slug, as_json):
    """Webhook deliveries, events, rejections, contacts and messages of a shop."""
    import json

    from .store import traffic_stats
    stats = traffic_stats(shop_or_fail(slug))
    if as_json:
        click.echo(json.dumps(stats, ensure_ascii=False, sort_keys=True))
        return
    for key, value in stats.items():
        click.echo(f"{key}: {json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value}")


@line_cli.command("worker")
@click.option("--once", is_flag=True, help="Run what is pending now, then exit.")
@click.option("--interval", type=float, default=None, help="Seconds between passes (WORKER_POLL_SECONDS).")
def worker_command(once, interval):
    """Run stored webhook events (production: one or more of these beside the web server)."""
    import signal

    from flask import current_app

    from . import worker
    app = current_app._get_current_object()
    if once:
        click.echo(f"Ran {worker.process_pending(app)} event(s).")
        return
    loop = worker.Loop(app, interval=interval)  # None: WORKER_POLL_SECONDS
    # Ctrl+C and SIGTERM (systemd, docker stop) finish the event in hand, then leave.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: loop.stop())
    click.echo(f"Event worker running (every {loop.interval:g} s); Ctrl+C stops it.")
    loop.run()
    click.echo("Event worker stopped.")
