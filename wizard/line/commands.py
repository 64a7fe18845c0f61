"""``flask --app wizard line …``: connect a shop's channel, its webhook numbers, the event worker."""
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


@line_cli.command("connect")
@click.argument("slug")
@click.option("--channel-id", required=True, help="Channel ID from Messaging API settings.")
@click.option("--channel-secret", required=True, help="Channel secret from Messaging API settings.")
def connect_command(slug, channel_id, channel_secret):
    """Check the credentials against LINE, save them, print the shop's webhook URL (last line)."""
    from .connection import FormatProblem, connect, webhook_url
    from .problems import LineProblem
    shop = shop_or_fail(slug)
    try:
        channel = connect(shop, channel_id, channel_secret)
    except FormatProblem as exc:
        db.session.rollback()
        raise click.ClickException(f"{exc.message} ({exc.code})")
    except LineProblem as exc:
        db.session.rollback()
        raise click.ClickException(f"{exc.message} {exc.hint} ({exc.code})")
    db.session.commit()
    click.echo(f"Connected {shop.slug} to LINE channel {channel.channel_id}: "
               f"{channel.display_name} ({channel.basic_id}).")
    click.echo("Paste this webhook URL into LINE (Messaging API → Webhook URL):")
    click.echo(webhook_url(channel))


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
    loop = worker.Loop(app, interval=interval or app.config.get("WORKER_POLL_SECONDS", 1.0))
    # Ctrl+C and SIGTERM (systemd, docker stop) finish the event in hand, then leave.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: loop.stop())
    click.echo(f"Event worker running (every {loop.interval:g} s); Ctrl+C stops it.")
    loop.run()
    click.echo("Event worker stopped.")


@line_cli.command("doctor")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, the same as the status API.")
def doctor_command(slug, as_json):
    """Run every check now (asking LINE afresh); exit status 0 only when the shop is connected."""
    import json

    from ..steps.registry import STEPS
    from ..steps.status import evaluate
    shop = shop_or_fail(slug)
    status = evaluate(shop, force=True)
    db.session.commit()
    if as_json:
        click.echo(json.dumps(status.as_json(), ensure_ascii=False, indent=2))
    else:
        marks = {"done": "OK ", "todo": "...", "action_needed": "!! ", "unverifiable": "?? "}
        click.echo(f"{shop.name} ({shop.slug})")
        for index, (step, result) in enumerate(zip(STEPS, status.steps), start=1):
            click.echo(f"{marks[result.state]} {index}. {step.title} [{result.state}: {result.reason}]")
            click.echo(f"      {result.message}")
        click.echo("connected" if status.connected else "NOT connected")
    raise SystemExit(0 if status.connected else 1)
