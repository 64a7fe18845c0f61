"""Every sentence a shop owner can see exists in Traditional Chinese: the catalog covers all the source text,
with no untranslated or fuzzy entry, and its placeholders match the English ones."""
import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "wizard" / "translations" / "zh_Hant_TW" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]")


def _source_messages(tmp_path):
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run([str(pybabel), "extract", "-F", "babel.cfg",
                    "-k", "_l", "-k", "lazy_gettext", "-o", str(pot), "."],
                   cwd=ROOT, check=True, capture_output=True)
    with pot.open("rb") as handle:
        found = {message.id for message in read_po(handle) if message.id}
    assert len(found) > 300, "extraction found too little text: is babel.cfg still right?"
    return found


def test_catalog_translates_every_source_message(tmp_path):
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle)
    translated = {m.id: m for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(str(i) for i in _source_messages(tmp_path) if i not in translated)
    assert not missing, f"{len(missing)} messages have no Chinese translation, e.g. {missing[:5]}"
    for message_id, message in translated.items():
        source = message_id if isinstance(message_id, str) else message_id[0]
        target = message.string if isinstance(message.string, str) else message.string[0]
        assert sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(target)), source


def test_the_catalog_speaks_to_people_as_您_and_names_the_customer_form_one_way():
    """Owners and customers are addressed politely everywhere (您, never 你), and the customer form has one name
    (客戶資料回填表), so a page never says 顧客資料表單 beside it."""
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle)
    for message in catalog:
        strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        for text in strings:
            assert "你" not in (text or ""), (message.id, text)
            assert "顧客資料表單" not in (text or ""), (message.id, text)
