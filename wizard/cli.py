"""Staff commands: ``flask --app wizard user …``, ``shop …``; the ``line`` and ``sandbox`` groups live beside
the code they drive (``line/commands.py``, ``sandbox/commands.py``) and are registered here."""
import re

import click
from flask.cli import AppGroup

from .extensions import db
from .models import Shop, User

user_cli = AppGroup("user", help="Create staff and shop-owner accounts.")
shop_cli = AppGroup("shop", help="Create shops.")

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def create_user(email, password, staff=False):
    """Shared by the CLI and the staff pages; raises ValueError with a message fit for a person."""
    from .views.auth import MIN_PASSWORD
    email = (email or "").strip().lower()
    if not EMAIL.match(email):
        raise ValueError(f"'{email}' is not an e-mail address.")
    if db.session.scalar(db.select(User).filter_by(email=email)):
        raise ValueError(f"A user with the e-mail {email} already exists.")
    if len(password or "") < MIN_PASSWORD:
        raise ValueError(f"The password must have at least {MIN_PASSWORD} characters.")
    user = User(email=email, is_staff=staff)
    user.set_password(password)
    db.session.add(user)
    return user


def create_shop(slug, name, owner_email):
    slug = (slug or "").strip().lower()
    if not SLUG.match(slug):
        raise ValueError(f"'{slug}' is not a valid shop code: use lower-case letters, digits and '-'.")
    if db.session.scalar(db.select(Shop).filter_by(slug=slug)):
        raise ValueError(f"A shop with the code {slug} already exists.")
    if not (name or "").strip():
        raise ValueError("The shop needs a name.")
    owner = db.session.scalar(db.select(User).filter_by(email=(owner_email or "").strip().lower()))
    if owner is None:
        raise ValueError(f"No user has the e-mail {owner_email}; create it first with 'user create'.")
    if owner.is_staff:
        raise ValueError(f"{owner.email} is a staff account; a shop owner must be a normal account.")
    if owner.shop_id is not None:
        raise ValueError(f"{owner.email} already owns the shop {owner.shop.slug}.")
    shop = Shop(slug=slug, name=name.strip())
    db.session.add(shop)
    db.session.flush()
    owner.shop_id = shop.id
    return shop


@user_cli.command("create")
@click.argument("email")
@click.option("--staff", is_flag=True, help="Onboarding staff: sees every shop.")
@click.option("--password", help="Asked for when omitted.")
def user_create(email, staff, password):
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(email, password, staff)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    db.session.commit()
    click.echo(f"Created {'staff' if staff else 'owner'} user {user.email}.")


@user_cli.command("token")
@click.argument("email")
def user_token(email):
    """Print a new API token for a staff user (the old one stops working)."""
    from . import crypto
    user = db.session.scalar(db.select(User).filter_by(email=email.strip().lower()))
    if user is None:
        raise click.ClickException(f"No user has the e-mail {email}.")
    if not user.is_staff:
        raise click.ClickException(f"{user.email} is not a staff user; API tokens are for staff only.")
    token = crypto.new_token(32)
    user.api_token_digest = crypto.token_digest(token)
    db.session.commit()
    click.echo(token)


@shop_cli.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The shop's name as its owner knows it.")
@click.option("--owner", "owner_email", required=True, help="E-mail of an existing owner account.")
def shop_create(slug, name, owner_email):
    try:
        shop = create_shop(slug, name, owner_email)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    db.session.commit()
    click.echo(f"Created shop {shop.slug} ({shop.name}) owned by {owner_email.strip().lower()}.")


def init_app(app):
    from .line.commands import line_cli
    from .sandbox.commands import sandbox_cli
    for group in (user_cli, shop_cli, line_cli, sandbox_cli):
        app.cli.add_command(group)
