"""The wizard is its registry: a step added there is rendered, evaluated in dependency order, offered in the
rail and numbered everywhere, and reported in the status JSON and by ``line doctor``, with no other change."""
import json

import pytest
from flask import flash
from jinja2 import ChoiceLoader, DictLoader

from tests.wizard_helpers import connect, page_text, status_reason
from wizard.steps.context import StepResult
from wizard.steps.registry import Action, Registry, Step, registry
from wizard.steps.state import State

TEMPLATE = """{% extends "wizard/_layout.html" %}
{% block body %}<p id="rules">{{ rules }}</p>
<form method="post"><input type="hidden" name="action" value="agree"><button>Agree</button></form>{% endblock %}"""


def _check(ctx):
    blocker = ctx.unmet("credentials")
    if blocker is not None or ctx.channel is None:
        return ctx.waiting_for("house_rules", blocker or ctx.results["credentials"])
    if (ctx.shop.confirmations or {}).get("house_rules"):
        return StepResult("house_rules", State.DONE, "house_rules_agreed")
    return StepResult("house_rules", State.TODO, "house_rules_pending", {"account": ctx.channel.display_name})


def _agree(page):
    page.shop.confirmations = {**(page.shop.confirmations or {}), "house_rules": True}
    flash("Agreed.", "success")


HOUSE_RULES = Step(
    "house_rules", "House rules", _check, depends_on=("credentials",), template="wizard/house_rules.html",
    context=lambda page: {"rules": f"Rules for {page.shop.name}"},
    actions={"agree": Action(_agree, recheck=False, advance=True)},
    reasons={"house_rules_pending": "%(account)s has not agreed to the house rules.",
             "house_rules_agreed": "The house rules are agreed."},
)


@pytest.fixture
def house_rules(app):
    app.jinja_env.loader = ChoiceLoader([DictLoader({"wizard/house_rules.html": TEMPLATE}), app.jinja_env.loader])
    registry().add(HOUSE_RULES, before="test_friend")
    yield HOUSE_RULES
    registry().remove("house_rules")


def test_a_registered_step_is_rendered_evaluated_and_reported(client, runner, make_shop, login, sandbox,
                                                              house_rules):
    slug, email = make_shop()
    login(email)
    client.get("/?lang=en")
    page = page_text(client.get(f"/setup/{slug}/house_rules"))
    assert "Step 8 of 10: House rules" in page and "Rules for 晴天烘焙坊" in page
    assert 'data-reason="fix_step_first"' in page and "waits for step 4" in page
    assert "Step 9 of 10: Test by adding a friend" in page_text(client.get(f"/setup/{slug}/test_friend"))
    assert page.count('class="rail-item') == 10

    channel = sandbox.control.create_channel(display_name="晴天烘焙坊")
    connect(client, slug, channel)
    page = client.get(f"/setup/{slug}/house_rules")
    assert status_reason(page) == ("todo", "house_rules_pending")
    assert "晴天烘焙坊 has not agreed to the house rules." in page_text(page)

    response = client.post(f"/setup/{slug}/house_rules", data={"action": "agree"})
    assert response.headers["Location"].endswith(f"/setup/{slug}/test_friend")  # done, so on to the next
    body = client.get(f"/api/v1/shops/{slug}/status").get_json()
    keys = [step["key"] for step in body["steps"]]
    assert keys.index("house_rules") == keys.index("test_friend") - 1
    rules = next(step for step in body["steps"] if step["key"] == "house_rules")
    assert (rules["state"], rules["reason"], rules["message"]) == ("done", "house_rules_agreed",
                                                                   "The house rules are agreed.")
    doctor = runner.invoke(args=["line", "doctor", slug])
    assert "8. House rules [done: house_rules_agreed]" in doctor.output
    assert json.loads(runner.invoke(args=["line", "doctor", slug, "--json"]).output)["steps"][7]["key"] == \
        "house_rules"


def test_evaluation_order_follows_dependencies_not_page_order():
    def noop(ctx):
        return None
    steps = Registry([Step("a", "A", noop, depends_on=("c",)), Step("b", "B", noop), Step("c", "C", noop)])
    assert [step.key for step in steps.evaluation_order()] == ["c", "a", "b"]
    circle = Registry([Step("a", "A", noop, depends_on=("b",)), Step("b", "B", noop, depends_on=("a",))])
    with pytest.raises(ValueError, match="circle"):
        circle.evaluation_order()
    with pytest.raises(ValueError, match="exists already"):
        steps.add(Step("b", "B again", noop))
