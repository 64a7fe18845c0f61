"""Every reason a shop's state can carry reads as a short phrase wherever staff see it in a line (step history,
timeline, alert subjects, audit entries): never a sentence with its blanks unfilled ("自 ? 起共 ? 筆")."""
import pytest

from wizard.steps.health import REASONS
from wizard.steps.reasons import headline


@pytest.mark.parametrize("lang", ["zh_Hant_TW", "en"])
def test_every_state_reason_has_a_short_phrase_without_blanks(app, lang):
    with app.test_request_context(f"/?lang={lang}"):
        for code in REASONS:
            phrase = headline(code)
            assert "?" not in phrase and "%(" not in phrase, f"{code}: {phrase}"
