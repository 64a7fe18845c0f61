"""``flask --app wizard sandbox …``: play the LINE side (channels, switches, users who follow and talk).

The commands open the sandbox database named by ``SANDBOX_DATABASE_URL`` (by default ``instance/sandbox.db``),
the same one a running sandbox uses, and send webhooks themselves. What a script needs goes to stdout
(``--json`` output, the new secret); explanations for people go to stderr.
"""
import json
from contextlib import contextmanager

import click
from flask import current_app
from flask.cli import AppGroup

from .control import UNSET, Sandbox, SandboxError

# ``show`` prints at most this many users and messages (a bench account has 100,000 friends).
SHOWN = 1000
sandbox_cli = AppGroup("sandbox", help="Play the LINE side in the built-in sandbox.")


@contextmanager
def opened():
    sandbox = Sandbox(current_app.config["SANDBOX_DATABASE_URL"])
    try:
        yield sandbox
    except SandboxError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        sandbox.close()


def _print_json(value):
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _report(result, as_json):
    if as_json:
        _print_json(result)
        return
    user, delivery = result["user"], result["delivery"]
    what = {"follow": "followed", "unfollow": "blocked the account", "message": "sent a message"}
    click.echo(f"{user['userId']} ({user['displayName']}) {what[result['event']['type']]}.")
    if delivery is None:
        click.echo(f"No webhook sent: {result['skipped']}.")
    else:
        click.echo(f"Webhook to {delivery['url']}: {delivery['reason']} {delivery['detail']}")


@sandbox_cli.command("create-channel")
@click.option("--name", "display_name", help="The account's display name.")
@click.option("--endpoint", help="Webhook URL to set right away.")
@click.option("--json", "as_json", is_flag=True,
              help="Print channelId, channelSecret, basicId and botUserId as JSON.")
def create_channel(display_name, endpoint, as_json):
    """Create a channel, as enabling the Messaging API does."""
    with opened() as sandbox:
        channel = sandbox.create_channel(display_name=display_name, endpoint=endpoint)
    if as_json:
        _print_json({key: channel[key] for key in ("channelId", "channelSecret", "basicId", "botUserId")})
        return
    click.echo(f"Channel ID:     {channel['channelId']}")
    click.echo(f"Channel secret: {channel['channelSecret']}")
    click.echo(f"Basic ID:       {channel['basicId']}")
    click.echo(f"Bot user ID:    {channel['botUserId']}")


@sandbox_cli.command("set")
@click.argument("channel_id")
@click.option("--endpoint", help="Webhook URL; an empty string removes it.")
@click.option("--webhook-active", type=click.Choice(["on", "off"]), help="The “Use webhook” switch.")
@click.option("--chat-mode", type=click.Choice(["chat", "bot"]), help="Chat on (chat) or off (bot).")
@click.option("--reissue-secret", is_flag=True, help="Issue a new Channel secret and print it.")
@click.option("--name", "display_name", help="The account's display name.")
def set_channel(channel_id, endpoint, webhook_active, chat_mode, reissue_secret, display_name):
    """Change the LINE side as a shop owner would in LINE's consoles."""
    with opened() as sandbox:
        channel = sandbox.update(
            channel_id, endpoint=UNSET if endpoint is None else endpoint,
            webhook_active=None if webhook_active is None else webhook_active == "on",
            chat_mode=chat_mode, reissue_secret=reissue_secret, display_name=display_name)
    click.echo(f"Channel {channel['channelId']}: webhook URL {channel['endpoint'] or '(none)'}, "
               f"use webhook {'on' if channel['webhookActive'] else 'off'}, chat mode {channel['chatMode']}.",
               err=True)
    if reissue_secret:
        click.echo(channel["channelSecret"])


@sandbox_cli.command("show")
@click.argument("channel_id")
def show(channel_id):
    """Print a channel, its friends and what was sent to them, as JSON."""
    with opened() as sandbox:
        _print_json(dict(sandbox.channel(channel_id), users=sandbox.users(channel_id, SHOWN),
                         sentMessages=sandbox.sent_messages(channel_id, limit=SHOWN)))


@sandbox_cli.command("follow")
@click.argument("channel_id")
@click.option("--user-id", help="U + 32 hex digits; a new user when omitted (or an unblock when known).")
@click.option("--name", help="The user's display name.")
@click.option("--json", "as_json", is_flag=True, help="Print the user, the event and the endpoint's answer.")
def follow(channel_id, user_id, name, as_json):
    """A user adds the account as a friend; the follow webhook is sent."""
    with opened() as sandbox:
        _report(sandbox.follow(channel_id, user_id, name), as_json)


@sandbox_cli.command("unfollow")
@click.argument("channel_id")
@click.option("--user-id", help="Which friend blocks; the one who followed last when omitted.")
@click.option("--json", "as_json", is_flag=True)
def unfollow(channel_id, user_id, as_json):
    """A friend blocks the account; the unfollow webhook is sent."""
    with opened() as sandbox:
        _report(sandbox.unfollow(channel_id, user_id), as_json)


@sandbox_cli.command("say")
@click.argument("channel_id")
@click.argument("text")
@click.option("--user-id", help="Which friend speaks; the one who followed last when omitted.")
@click.option("--json", "as_json", is_flag=True)
def say(channel_id, text, user_id, as_json):
    """A friend sends a text message; the message webhook is sent."""
    with opened() as sandbox:
        _report(sandbox.say(channel_id, user_id, text), as_json)


@sandbox_cli.command("friends")
@click.argument("channel_id")
@click.argument("count", type=click.IntRange(1, 1_000_000))
@click.option("--ids", "print_ids", is_flag=True, help="Print the new user IDs, one a line.")
def friends(channel_id, count, print_ids):
    """COUNT users add the account at once, without webhooks (a bench's customers)."""
    with opened() as sandbox:
        made = sandbox.make_friends(channel_id, count)
    click.echo(f"{len(made)} users added channel {channel_id}.", err=True)
    if print_ids:
        click.echo("\n".join(made))


@sandbox_cli.command("plan")
@click.argument("channel_id")
@click.argument("plan", type=click.Choice(["free", "3000", "6000", "none"]))
def plan(channel_id, plan):
    """The account's plan: its monthly message limit (free: 200 messages)."""
    with opened() as sandbox:
        quota = sandbox.set_plan(channel_id, plan)["quota"]
    click.echo(f"Channel {channel_id}: {quota['value'] if quota['type'] == 'limited' else 'no'} message limit "
               "a month.", err=True)
