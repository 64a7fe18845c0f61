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
@click.option("--threads", type=int, default=None, help="Tasks run at once in this process (WORKER_THREADS).")
@click.option("--once", is_flag=True, help="Run what is waiting now in this process, then exit.")
@click.option("--no-periodic", is_flag=True, help="Leave the periodic sweep to other consumers.")
def worker_command(threads, once, no_periodic):
    """Run the queue's consumer: stored events, messages to LINE, the periodic sweep. Start one or more on
    any number of machines; what a killed one was doing is picked up by the others (or by its restart)."""
    from flask import current_app

    from .. import heap, queue
    from . import worker
    app = current_app._get_current_object()
    if once:
        click.echo(f"Ran {worker.process_pending(app)} event(s).")
        return
    huey = queue.instance(app)
    options = queue.consumer_options(app, threads, periodic=not no_periodic)
    # SIGTERM (systemd, docker stop) lets running tasks finish; Ctrl+C stops at once (nothing is lost either
    # way: the sweep finds what was cut short).
    where = queue.describe_queue(app)
    announce = f"Queue consumer running ({options['workers']} threads, queue {where}); Ctrl+C stops it."
    consumer = queue.AnnouncingConsumer(huey, lambda: click.echo(announce), graceful_signal="TERM",
                                        shutdown_timeout=30, **options)
    if app.config["WORKER_METRICS_PORT"]:
        from .. import metrics
        metrics.start_metrics_server(app.config["WORKER_METRICS_PORT"])
    queue.sweep_soon()
    heap.freeze_loaded_app()
    consumer.run()
    click.echo("Queue consumer stopped.")
