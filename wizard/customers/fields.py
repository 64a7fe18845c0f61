"""The fields the customer data form may ask, and how what people type is read.

Customers type on phones with Chinese input methods, which often give full-width characters
(０９１２－３４５－６７８, ｍｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ): everything is read as what the person meant (NFKC)
and stored plain. Mobile numbers are Taiwan's: 09 and 8 more digits, also typed as +886 9… or 886 9….
Never a national ID number, nor anything of PDPA Art. 6's special categories.
"""
import re
import unicodedata
from datetime import date

from flask_babel import lazy_gettext as _l

# API/settings name -> (form field and Contact attribute, label). Wizard order.
FIELDS = {
    "name": ("customer_name", _l("Name")),
    "mobile": ("phone", _l("Mobile phone")),
    "email": ("email", _l("E-mail")),
    "birthday": ("birthday", _l("Birthday")),
    "gender": ("gender", _l("Gender")),
    "city": ("city", _l("City or county")),
}
MODES = ("required", "optional", "off")
MODE_LABELS = {"required": _l("Required"), "optional": _l("Optional"), "off": _l("Not asked")}
# PDPA categories: C○○一 identifies the person (name, contact details, where they live); C○一一 describes them
# (birthday, gender).
IDENTIFYING = ("name", "mobile", "email", "city")
DESCRIBING = ("birthday", "gender")

GENDERS = {"female": _l("Female"), "male": _l("Male"), "other": _l("Other"),
           "undisclosed": _l("Prefer not to say")}
# Taiwan's 22 cities and counties, by ISO 3166-2:TW code, in the order the government lists them.
CITIES = {
    "TPE": _l("Taipei City"), "NWT": _l("New Taipei City"), "TAO": _l("Taoyuan City"),
    "TXG": _l("Taichung City"), "TNN": _l("Tainan City"), "KHH": _l("Kaohsiung City"),
    "KEE": _l("Keelung City"), "HSZ": _l("Hsinchu City"), "CYI": _l("Chiayi City"),
    "HSQ": _l("Hsinchu County"), "MIA": _l("Miaoli County"), "CHA": _l("Changhua County"),
    "NAN": _l("Nantou County"), "YUN": _l("Yunlin County"), "CYQ": _l("Chiayi County"),
    "PIF": _l("Pingtung County"), "ILA": _l("Yilan County"), "HUA": _l("Hualien County"),
    "TTT": _l("Taitung County"), "PEN": _l("Penghu County"), "KIN": _l("Kinmen County"),
    "LIE": _l("Lienchiang County"),
}

# What people type between digits: spaces, dots, brackets and dashes (hyphen, non-breaking hyphen, figure
# dash, en and em dash, horizontal bar, minus sign, the katakana long vowel mark some input methods give for
# a dash). Full-width forms are already plain after NFKC.
PHONE_SEPARATORS = re.compile(r"[\s.()\-\u2010-\u2015\u2212\u30fc]")
MOBILE = re.compile(r"^09[0-9]{8}$")  # ASCII digits only: \d would also take other scripts' digits
OLDEST_BIRTHDAY = date(1900, 1, 1)


def normalise_phone(value: str) -> str:
    """As stored: 0912345678 for 0912-345-678, ０９１２３４５６７８, +886 912 345 678 or 886912345678."""
    plain = PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", value or "").strip())
    for prefix in ("+8860", "+886", "8860", "886"):
        if plain.startswith(prefix) and len(plain) - len(prefix) == 9:
            return "0" + plain[len(prefix):]
    return plain


def is_mobile(value: str) -> bool:
    return bool(MOBILE.match(normalise_phone(value)))


def has_control_characters(value: str, allow_newlines=False) -> bool:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    return any(unicodedata.category(char) == "Cc" and char not in allowed for char in value or "")


def masked(name, value):
    """A saved value as the form shows it again: enough for its owner to recognise, too little for anyone else
    holding the link (a forwarded message, a shared phone) to learn it. Empty for nothing saved."""
    if value in (None, ""):
        return ""
    if name == "birthday":
        return f"{value.year}-**-**"
    if name in ("gender", "city"):
        return "●●●"  # a choice of a short list: its first letters would tell it
    text = str(value)
    if name == "email":
        local, _at, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    if name == "mobile":
        return f"{text[:4]}***{text[-3:]}" if len(text) > 7 else "***"
    # A name: its first character (the family name, in Chinese) and stars for the rest.
    return text[:1] + "*" * min(max(1, len(text) - 1), 5)
