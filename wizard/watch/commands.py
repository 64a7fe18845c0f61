"""``flask --app wizard line check-all [--json]``: one round of the drift watch now, over every shop."""
import json
from collections import Counter

import click

from ..line.commands import line_cli
from ..statuses import ShopState


@line_cli.command("check-all")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per shop (slug, state, reason, "
                                                       "since), for scripts.")
@click.option("--threads", type=int, default=8, show_default=True, help="Shops checked at once.")
def check_all_command(as_json, threads):
    """Check every shop against LINE now, record its state (alerts follow), and print the states.

    The summary goes to stderr, so stdout stays one shop per line. Exit status 1 when any shop is broken, 2 when
    the check of any shop failed (it keeps its recorded state; the error is logged)."""
    from .drift import check_all
    results, calls, seconds = check_all(threads=threads)
    failed = [slug for slug, _state, error in results if error]
    for slug, state, _error in results:
        if as_json:
            click.echo(json.dumps({"slug": slug, "state": state["state"], "reason": state["reason"],
                                   "since": state["since"]}, ensure_ascii=False))
        else:
            click.echo(f"{slug}\t{state['state']}\t{state['reason']}\tsince {state['since']}")
    counts = Counter(state["state"] for _slug, state, _error in results)
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items())) or "no shops"
    per_shop = calls / len(results) if results else 0
    click.echo(f"{len(results)} shop(s) checked in {seconds:.1f} s: {summary}; "
               f"{calls:g} LINE calls ({per_shop:.1f} per shop).", err=True)
    if failed:
        click.echo(f"The check of {len(failed)} shop(s) failed (see the log): {', '.join(failed)}", err=True)
        raise SystemExit(2)
    raise SystemExit(1 if counts.get(ShopState.BROKEN) else 0)
