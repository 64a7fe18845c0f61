"""Staff commands: ``flask --app wizard user …``, ``shop …``; the ``line`` and ``sandbox`` groups live beside
the code they drive (``line/commands.py``, ``sandbox/commands.py``) and are registered here, the sandbox's only where
``SANDBOX`` is on.

Thin on purpose: the rules and the writes are in ``accounts.py`` (shared with the staff pages and the dev
server); this module only parses arguments, commits, and prints. Staff read the terminal in English, so a
refusal is printed in English whatever the app's default language is.
"""
from contextlib import contextmanager

import click
from flask.cli import AppGroup, with_appcontext
from flask_babel import force_locale

from . import accounts, audit, crypto, throttle
from .extensions import db

user_cli = AppGroup("user", help="Create staff and shop-owner accounts.")
shop_cli = AppGroup("shop", help="Create shops.")


@contextmanager
def refusals_as_errors():
    """Every problem accounts found, one per line, as click's error (exit code 1); nothing is committed."""
    try:
        yield
    except accounts.AccountErrors as exc:
        db.session.rollback()
        with force_locale("en"):
            message = str(exc)
        raise click.ClickException(message) from None


@user_cli.command("create")
@click.argument("email")
@click.option("--staff", is_flag=True, help="Onboarding staff: sees every shop.")
@click.option("--password", help="Asked for when omitted.")
def user_create(email, staff, password):
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with refusals_as_errors():
        user = accounts.create_user(email, password, staff)
    db.session.commit()
    click.echo(f"Created {'staff' if staff else 'owner'} user {user.email}.")


@user_cli.command("token")
@click.argument("email")
def user_token(email):
    """Print a new API token for a staff user (the old one stops working)."""
    with refusals_as_errors():
        token = accounts.new_api_token(email)
    db.session.commit()
    click.echo(token)


@user_cli.command("unlock")
@click.argument("email", required=False)
@click.option("--address", help="Lift the delay of this client address instead (every account tried from it).")
def user_unlock(email, address):
    """Lift the sign-in delay of an account (after failed tries), or of a client address."""
    if bool(email) == bool(address):
        raise click.UsageError("Give an account's e-mail address or --address, one of them.")
    if address:
        running = throttle.lift_address(address.strip())
        audit.record("address.sign_in_delay_lifted", actor="cli", target=address.strip(), was_running=running)
        who = f"address {address.strip()}"
    else:
        user = accounts.user_by_email(email)
        if user is None:
            raise click.ClickException(f"No user has the e-mail {email.strip()}.")
        running = throttle.lift(user.email)
        audit.record("account.sign_in_delay_lifted", shop=user.shop_id, actor="cli", target=user.email,
                     was_running=running)
        who = user.email
    db.session.commit()
    click.echo(f"Lifted the sign-in delay of {who}." if running else
               f"No sign-in delay was running for {who}; its failed tries are forgotten all the same.")


@shop_cli.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The shop's name as its owner knows it.")
@click.option("--owner", "owner_email", required=True, help="E-mail of an existing owner account.")
def shop_create(slug, name, owner_email):
    with refusals_as_errors():
        shop = accounts.create_shop(slug, name, owner_email)
    db.session.commit()
    click.echo(f"Created shop {shop.slug} ({shop.name}) owned by {accounts.normalise_email(owner_email)}.")


@click.command("rotate-key")
@with_appcontext
def rotate_key():
    """Re-encrypt every stored secret under the first ENCRYPTION_KEY (the keys after it only decrypt)."""
    try:
        keys = crypto.keys()
        crypto.encrypt("")  # every key must be a Fernet key before anything is read
    except ValueError:
        raise click.ClickException("ENCRYPTION_KEY holds a value that is not a Fernet key "
                                   "(32 url-safe base64-encoded bytes); nothing was changed.") from None
    try:
        counts = crypto.rotate_stored(db.session, db.metadata)
    except crypto.SecretsUnreadable as exc:
        db.session.rollback()
        where = ", ".join(f"{table}.{column} id {row_id}" for table, column, row_id in exc.where)
        raise click.ClickException(
            f"{len(exc.where)} stored secret(s) cannot be decrypted with any of the {len(keys)} key(s) in "
            f"ENCRYPTION_KEY ({where}); nothing was changed. Add the key they were encrypted with after the "
            "new one and run rotate-key again.") from None
    db.session.commit()
    for name, count in counts.items():
        click.echo(f"{name}: {count} re-encrypted")
    # Webhook bodies refused for their signature (line/quarantine.py) are encrypted the same way.
    bodies = counts.get("quarantined_bodies.body_encrypted", 0)
    click.echo(f"Re-encrypted {sum(counts.values()) - bodies} secret(s)"
               + (f" and {bodies} quarantined webhook {'bodies' if bodies > 1 else 'body'}" if bodies else "")
               + f" under the first of {len(keys)} key(s). "
               + ("The keys after the first can now be removed from ENCRYPTION_KEY." if len(keys) > 1 else
                  "Only one key is set: to change it, set ENCRYPTION_KEY to \"NEW,OLD\" and run this again."))


@click.command("retention")
@with_appcontext
def retention_command():
    """Delete now what has outlived its retention setting (the queue runs this nightly)."""
    from . import retention
    counts = retention.run()
    click.echo("Deleted: " + ", ".join(f"{count} {kind}" for kind, count in counts.items()) + ".")


def init_app(app):
    from .line.commands import line_cli
    from .steps import commands as _wizard_commands  # noqa: F401  (adds ``line connect`` and ``line doctor``)
    from .watch import commands as _watch_commands  # noqa: F401  (adds ``line check-all``)
    for group in (user_cli, shop_cli, line_cli):
        app.cli.add_command(group)
    if app.config["SANDBOX"]:
        # Only where the sandbox plays LINE (the embedded default): a production app has no ``sandbox`` command.
        from .sandbox.commands import sandbox_cli
        app.cli.add_command(sandbox_cli)
    app.cli.add_command(rotate_key)
    app.cli.add_command(retention_command)  # ``flask --app wizard retention``: retention.py, now
    from .line.commands import worker_command
    app.cli.add_command(worker_command, "worker")  # ``flask --app wizard worker``: the queue's consumer
