"""LINE Connect Wizard: connects a shop's LINE Official Account to the CRM and keeps it connected.

``create_app`` only wires things together: configuration, extensions, blueprints and CLI commands.
"""
import os
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config=None):
    from .config import ConfigError
    if not (ROOT / "templates").is_dir() or not (ROOT / "static").is_dir():
        # Installed from a wheel: the pages and their static files live beside wizard/ in a checkout, not in it.
        raise ConfigError(f"templates/ and static/ are not beside the wizard package ({ROOT}): the app runs from "
                          "a checkout (git clone, then make install; see deploy/README.md), not from a wheel.")
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
    from . import mail
    mail.check_settings(app)  # a deployment without MAIL_URL would keep its mail as files: refused at start
    from . import observability, request_costs
    request_costs.init_app(app)  # what every request pays for beside its view, kept small
    observability.init_app(app)  # JSON logs when LOG_FORMAT says so; a request id on every request and answer
    from . import guard, redact
    guard.init_app(app)  # NUL bytes and broken bodies are a 4xx before any view or extension sees them
    redact.install()  # request log lines never show the webhook or form token in their paths
    from .line import fast_path
    fast_path.init_app(app)  # LINE's valid deliveries skip Flask's request machinery (see there)
    if int(app.config["TRUSTED_PROXIES"] or 0):
        # Behind deploy/nginx.conf: the client's address and its https come from the proxy's X-Forwarded-*.
        # X-Forwarded-For is a chain every proxy appends to, so the client is TRUSTED_PROXIES entries from the
        # right; X-Forwarded-Proto is set whole by the nginx next to gunicorn (one value), so it counts once.
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=1)

    from .extensions import babel, csrf, db, login_manager, migrate
    from . import audit_words, i18n, security
    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale,
                   default_translation_directories=str(Path(__file__).parent / "translations"))
    i18n.init_app(app)
    audit_words.init_app(app)  # the audit log's words as template filters (it reads steps' headlines)
    security.init_app(app)  # headers on every response; the sign-in throttle's storage

    from . import models  # noqa: F401  (registers the tables with SQLAlchemy)
    from . import statuses
    statuses.init_app(app)  # templates compare with ShopState.BROKEN, OutboxStatus.DEAD … instead of strings
    from .extensions import tune_sqlite
    with app.app_context():
        tune_sqlite(db.engine)
    from .line import receiver
    from .views import BoundedInt, api, auth, shops, wizard
    app.url_map.converters["int"] = BoundedInt  # before any route: every <int:id> stops at the largest id
    app.register_blueprint(auth.bp)
    app.register_blueprint(shops.bp)
    from .views import shop
    app.register_blueprint(shop.bp)  # staff: /shops/<slug>/…, one shop's page, check now, alerts, invite
    from .views import outbox as outbox_views
    app.register_blueprint(outbox_views.bp)  # staff: messages to LINE that need a person
    from .views import invitations as invitation_views, mail as mail_views, people
    app.register_blueprint(people.bp)  # staff: accounts, invitations, API tokens, the audit log
    app.register_blueprint(mail_views.bp)  # staff: every mail sent
    app.register_blueprint(invitation_views.bp)  # /invite/<token>; an owner's /account/people
    app.register_blueprint(wizard.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(receiver.bp)
    from .views import contact_form, errors, health
    app.register_blueprint(contact_form.bp)  # the customer data form (public, reached by a random link)
    from .views import contacts as contact_views
    app.register_blueprint(contact_views.bp)  # /c/…: a shop's contacts and conversations (owners and staff)
    from .views import api_templates, media as media_views, message_templates
    app.register_blueprint(message_templates.bp)  # /c/<slug>/templates: message templates (owners and staff)
    app.register_blueprint(media_views.bp)  # /media/<name>: the templates' pictures, public (LINE fetches them)
    app.register_blueprint(api_templates.bp)  # /api/v1/shops/<slug>/templates
    csrf.exempt(api_templates.bp)
    from .views import api_plans, send_plans
    app.register_blueprint(send_plans.bp)  # /c/<slug>/plans: send plans (owners and staff)
    app.register_blueprint(api_plans.bp)  # /api/v1/shops/<slug>/send-plans
    app.register_blueprint(health.bp)  # /healthz (alive), /readyz (database and queue answer)
    from . import metrics
    app.register_blueprint(metrics.bp)  # /metrics for Prometheus (METRICS_TOKEN, else loopback only)
    app.register_blueprint(errors.bp)  # the product's own 4xx/5xx pages; JSON for /api/ and the webhook
    csrf.exempt(receiver.bp)
    csrf.exempt(api.bp)
    csrf.exempt(api_plans.bp)
    from .views import api_audience
    app.register_blueprint(api_audience.bp)  # /api/v1/shops/<slug>/audience/count (issue 16)
    csrf.exempt(api_audience.bp)

    from . import cli
    cli.init_app(app)
    from . import watch
    watch.init_app(app)  # alerts follow every change of a shop's state
    from .watch import evidence
    receiver.signature_refused.connect(evidence.ring, sender=app)  # a refused signature re-checks its shop

    # The layers below learn what sits above them by registration, never by importing it: the task bodies on
    # the queue (jobs), the CRM's event rules and message purposes, LINE as the outgoing core's sender.
    from . import jobs, queue  # noqa: F401  (jobs: attaches the task bodies to the queue's jobs)
    from .customers import rules
    from .line import sender as line_sender, worker
    from .outgoing import batches, outbox, sender
    rules.register()
    from .plans import runs as plan_runs
    plan_runs.register()  # the send plans' outbox purpose and batch owner
    sender.use(line_sender.LineSender())
    worker.also_pending(outbox.send_due)
    worker.also_pending(batches.send_due)  # multicast and broadcast chunks due (worker --once, tests)
    if app.config["WORKER_IN_PROCESS"]:
        queue.start_in_process(app)
    return app
