"""Cleaning what a person typed on a phone: full-width characters, stray spaces, invisible marks."""
import unicodedata


def clean(value):
    """NFKC (so ``＠２８９ｊｑｐｗ`` becomes ``@289jqpw``), then no spaces, line breaks or zero-width marks."""
    value = unicodedata.normalize("NFKC", value or "")
    return "".join(ch for ch in value if not ch.isspace() and unicodedata.category(ch) != "Cf")
