"""LINE Connect Wizard: connects a shop's LINE Official Account to the CRM and keeps it connected.

``create_app`` only wires things together: configuration, extensions, blueprints and CLI commands.
"""
import os
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config=None):
    app = Flask(
        __name__,
        instance_path=(test_config or {}).get("INSTANCE_PATH")
        or os.environ.get("WIZARD_INSTANCE_PATH", str(ROOT / "instance")),
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    os.makedirs(app.instance_path, exist_ok=True)

    from . import config
    config.load(app, test_config)

    from .extensions import babel, csrf, db, login_manager, migrate
    from . import i18n
    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale,
                   default_translation_directories=str(Path(__file__).parent / "translations"))
    i18n.init_app(app)

    from . import models  # noqa: F401  (registers the tables with SQLAlchemy)
    from .extensions import tune_sqlite
    with app.app_context():
        tune_sqlite(db.engine)
    from .line import receiver
    from .views import api, auth, shops, wizard
    app.register_blueprint(auth.bp)
    app.register_blueprint(shops.bp)
    app.register_blueprint(wizard.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(receiver.bp)
    from .views import contact_form, errors, health
    app.register_blueprint(contact_form.bp)  # the customer data form (public, reached by a random link)
    app.register_blueprint(health.bp)
    app.register_blueprint(errors.bp)  # the product's own 4xx/5xx pages; JSON for /api/ and the webhook
    csrf.exempt(receiver.bp)
    csrf.exempt(api.bp)

    from . import cli
    cli.init_app(app)

    if app.config["WORKER_IN_PROCESS"]:
        from .line import worker
        worker.start_in_process(app)
    return app
