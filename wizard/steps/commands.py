"""``flask --app wizard line connect`` and ``line doctor``: the wizard's connection and checks, for staff.

They sit in the ``line`` command group (where staff look for them) but live with the wizard, whose connection
and evaluation they share with the pages.
"""
import json

import click

from ..extensions import db
from ..line.commands import line_cli, shop_or_fail
from ..line.endpoint import webhook_url
from ..line.problems import LineProblem
from .connection import FormatProblem, connect
from .health import as_json as state_json
from .registry import registry
from .status import evaluate


@line_cli.command("connect")
@click.argument("slug")
@click.option("--channel-id", required=True, help="Channel ID from Messaging API settings.")
@click.option("--channel-secret", required=True, help="Channel secret from Messaging API settings.")
def connect_command(slug, channel_id, channel_secret):
    """Check the credentials against LINE, save them, print the shop's webhook URL (last line)."""
    shop = shop_or_fail(slug)
    try:
        channel = connect(shop, channel_id, channel_secret)
    except FormatProblem as exc:
        db.session.rollback()
        raise click.ClickException(" ".join(f"{exc.message_for(field)} ({code})"
                                            for field, code in exc.errors.items()))
    except LineProblem as exc:
        db.session.rollback()
        raise click.ClickException(f"{exc.message} {exc.hint} ({exc.code})")
    db.session.commit()
    click.echo(f"Connected {shop.slug} to LINE channel {channel.channel_id}: "
               f"{channel.display_name} ({channel.basic_id}).")
    welcomed = channel.released.welcomed
    if welcomed:
        many = welcomed > 1
        click.echo(f"{welcomed} friend{'s' if many else ''} who added the account while it was broken "
                   f"{'have' if many else 'has'} now been welcomed.")
    click.echo("Paste this webhook URL into LINE (Messaging API → Webhook URL):")
    click.echo(webhook_url(channel))


@line_cli.command("doctor")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, the same as the status API.")
def doctor_command(slug, as_json):
    """Run every check now (asking LINE afresh); exit status 0 only when the shop is connected."""
    shop = shop_or_fail(slug)
    status = evaluate(shop, force=True)
    db.session.commit()
    if as_json:
        click.echo(json.dumps(status.as_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"{shop.name} ({shop.slug})")
        for index, (step, result) in enumerate(zip(registry(), status.steps, strict=True), start=1):
            click.echo(f"{result.state.mark} {index}. {step.title} [{result.state}: {result.reason}]")
            click.echo(f"      {result.message}")
        state = state_json(status.health)
        click.echo(f"state: {state['state']} ({state['reason']}) since {state['since']}"
                   + (f"; fixed in step {registry().number(state['fix_step'])}" if state["fix_step"] else ""))
        click.echo("connected" if status.connected else "NOT connected")
    raise SystemExit(0 if status.connected else 1)
