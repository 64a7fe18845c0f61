"""A shop's message templates (圖文訊息範本) for its owners and for staff: ``/c/<slug>/templates`` (the list),
``…/templates/new`` and ``…/templates/<id>/edit`` (the builder), ``…/templates/<id>/delete`` (asks first).

The builder is one server-rendered form that works without JavaScript: every button (add a message, move it,
remove it, add a card, insert an emoji or ``{name}``, preview, save) posts the whole form back and the page
comes back changed, with the preview drawn by the server. static/js/message_templates.js only makes the
preview follow the typing and inserts emoji at the cursor. A picture chosen in the form is uploaded with
whichever button is pressed, and kept by its address from then on.

Access is the contacts pages' (views/contacts.py): ``shop_for`` (another shop's owner gets 404, as for a shop
that does not exist), staff see the acting-for banner, and every save and delete is in the audit log.
"""
import json
import re

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from markupsafe import Markup, escape

from .. import audit
from ..extensions import db
from ..plans import cards, media, templates
from . import acting_for, checked_post, shop_for

bp = Blueprint("message_templates", __name__, url_prefix="/c")

MAX_SLOTS = 10  # messages read from one form: more than LINE's five is refused by the check, not dropped
EMOJI_PICTURE = "https://stickershop.line-scdn.net/sticonshop/v1/sticon/{product}/iPhone/{emoji}.png"


@bp.before_request
@login_required
def signed_in():
    pass


@bp.get("/<slug>/templates")
def index(slug):
    shop = shop_for(slug)
    return render_template("message_templates/index.html", shop=shop, rows=templates.for_shop(shop),
                           personal=templates.personal, acting_for=acting_for(shop))


@bp.route("/<slug>/templates/new", methods=["GET", "POST"])
def new(slug):
    shop = shop_for(slug)
    return _builder(shop, None)


@bp.route("/<slug>/templates/<int:template_id>/edit", methods=["GET", "POST"])
def edit(slug, template_id):
    shop = shop_for(slug)
    return _builder(shop, _template(shop, template_id))


@bp.route("/<slug>/templates/<int:template_id>/delete", methods=["GET", "POST"])
def delete(slug, template_id):
    shop = shop_for(slug)
    template = _template(shop, template_id)
    if request.method == "POST":
        checked_post()
        name = template.name
        try:
            templates.delete(template)
        except templates.InUse as in_use:
            return render_template("message_templates/delete.html", shop=shop, template=template,
                                   in_use=in_use, acting_for=acting_for(shop)), 409
        audit.record("message_template.deleted", shop=shop, target=name)
        db.session.commit()
        flash(_("The template “%(name)s” was deleted.", name=name), "success")
        return redirect(url_for(".index", slug=shop.slug))
    using = templates.live_plans(template)
    return render_template("message_templates/delete.html", shop=shop, template=template,
                           in_use=templates.InUse(using) if using else None, acting_for=acting_for(shop))


def _template(shop, template_id):
    template = templates.get(shop, template_id)
    if template is None:
        abort(404)
    return template


def _builder(shop, template):
    """The builder's page, or the save and the way back to the list."""
    problems = {}
    if request.method == "GET":
        name = template.name if template else ""
        drafts = templates.drafts_of(template.messages) if template else [{"kind": "text", "text": ""}]
        return _page(shop, template, name, drafts, problems)
    checked_post()
    name = request.form.get("name", "")
    drafts = _read(shop, request.form, request.files, problems)
    action = request.form.get("action", "preview")
    if action != "save":
        _apply(action, drafts)
        return _page(shop, template, name, drafts, problems, previewed=True)
    problems.update(templates.check_drafts(drafts, lambda url: media.owned(shop, url)))
    if not name.strip():
        problems["name"] = _("Give the template a name.")
    if problems:
        return _page(shop, template, name, drafts, problems, code=400)
    try:
        saved = templates.save(shop, name, templates.to_messages(drafts, name.strip()), template)
    except templates.Refused as refused:
        for where, message in refused.problems.items():
            key = templates.field_for_property(drafts, where) if where.startswith("messages[") else where
            problems[key] = f"{problems[key]} {message}" if key in problems else message
        return _page(shop, template, name, drafts, problems, code=400)
    audit.record("message_template.saved" if template else "message_template.created", shop=shop,
                 target=saved.name, messages=len(saved.messages))
    db.session.commit()
    flash(_("The template “%(name)s” was checked by LINE and saved.", name=saved.name), "success")
    return redirect(url_for(".index", slug=shop.slug))


def _read(shop, form, files, problems):
    """The drafts the posted form describes; a picture chosen in it is uploaded now, as the shop's (its
    problem, if any, goes next to its field). The same file posted again is the picture stored the first
    time (plans/media.py), so pressing buttons with a picture chosen stores it once."""
    drafts = []
    for n in range(MAX_SLOTS):
        kind = form.get(f"messages-{n}-kind")
        if kind is None:
            break
        prefix = f"messages-{n}"
        if kind == "text":
            drafts.append({"kind": "text", "text": form.get(f"{prefix}-text", "")})
        elif kind == "image":
            # The preview's address is derived from the picture's, never taken from the form.
            url = form.get(f"{prefix}-url", "")
            uploaded = _upload(shop, files.get(f"{prefix}-image"), problems, f"messages.{n}.image")
            if uploaded:
                url = uploaded["url"]
            drafts.append({"kind": "image", "url": url, "preview": media.preview_of(url) or ""})
        elif kind in ("card", "carousel"):
            many = []
            for c in range(cards.MAX_CARDS + 1):
                if f"{prefix}-cards-{c}-title" not in form:
                    break
                many.append(_card(shop, form, files, problems, f"{prefix}-cards-{c}"))
            drafts.append({"kind": "card", "card": many[0] if many else cards.empty_card()} if kind == "card"
                          else {"kind": "carousel", "cards": many})
        elif kind == "other":
            try:
                message = json.loads(form.get(f"{prefix}-message", ""))
            except ValueError:
                message = None
            if isinstance(message, dict):
                drafts.append({"kind": "other", "message": message})
    return drafts


def _card(shop, form, files, problems, prefix):
    card = {"image": form.get(f"{prefix}-picture", ""), "title": form.get(f"{prefix}-title", "").strip(),
            "text": form.get(f"{prefix}-text", "").strip(), "buttons": []}
    uploaded = _upload(shop, files.get(f"{prefix}-image"), problems, prefix.replace("-", ".") + ".image")
    if uploaded:
        card["image"] = uploaded["url"]
    for b in range(cards.MAX_BUTTONS):
        label = form.get(f"{prefix}-buttons-{b}-label", "").strip()
        value = form.get(f"{prefix}-buttons-{b}-value", "").strip()
        if label or value:
            card["buttons"].append({"label": label, "kind": form.get(f"{prefix}-buttons-{b}-kind", "uri"),
                                    "value": value})
    return card


def _upload(shop, file, problems, key):
    if file is None or not file.filename:
        return None
    try:
        return media.save(file.stream, shop)
    except media.Refused as exc:
        problems[key] = str(exc)
        return None


_ACTION = re.compile(r"^(more-card|remove-card|no-picture|add|remove|up|down|emoji|name)(?:-(\w+))?(?:-(\d+))?$")


def _apply(action, drafts):
    """What a button of the builder does to the drafts (all but save)."""
    found = _ACTION.match(action or "")
    if not found:
        return
    verb, first, second = found.groups()
    if verb == "add" and first in templates.KINDS and len(drafts) < MAX_SLOTS:
        drafts.append({"text": {"kind": "text", "text": ""}, "image": {"kind": "image", "url": "", "preview": ""},
                       "card": {"kind": "card", "card": cards.empty_card()},
                       "carousel": {"kind": "carousel", "cards": [cards.empty_card(), cards.empty_card()]}}[first])
        return
    n = int(first) if first and first.isdigit() else -1
    if not 0 <= n < len(drafts):
        return
    if verb == "remove":
        del drafts[n]
    elif verb == "up" and n > 0:
        drafts[n - 1], drafts[n] = drafts[n], drafts[n - 1]
    elif verb == "down" and n < len(drafts) - 1:
        drafts[n + 1], drafts[n] = drafts[n], drafts[n + 1]
    elif verb == "more-card" and drafts[n]["kind"] == "carousel" and len(drafts[n]["cards"]) < cards.MAX_CARDS:
        drafts[n]["cards"].append(cards.empty_card())
    elif verb in ("remove-card", "no-picture") and second is not None:
        many = drafts[n]["cards"] if drafts[n]["kind"] == "carousel" else [drafts[n].get("card")]
        c = int(second)
        if 0 <= c < len(many) and many[c] is not None:
            if verb == "no-picture":
                many[c]["image"] = ""
            elif len(many) > 1:
                del many[c]
    elif verb == "emoji" and drafts[n]["kind"] == "text" and second is not None:
        drafts[n]["text"] += "{emoji:%03d}" % int(second)
    elif verb == "name" and drafts[n]["kind"] == "text":
        drafts[n]["text"] += templates.NAME_TOKEN


def _page(shop, template, name, drafts, problems, code=200, previewed=False):
    ids = {key: key.replace(".", "-") for key in problems}
    return render_template(
        "message_templates/edit.html", shop=shop, template=template, name=name, drafts=drafts,
        problems=problems, problem_ids=ids, previewed=previewed, acting_for=acting_for(shop),
        emoji_ids=templates.EMOJI_IDS, default_product=templates.EMOJI_PRODUCT, emoji_picture=_emoji_picture,
        shown=_shown, preview_text=_preview_text,
        max_messages=templates.MAX_MESSAGES, max_cards=cards.MAX_CARDS, max_buttons=cards.MAX_BUTTONS,
        account=(shop.channel.display_name if shop.channel and shop.channel.display_name else shop.name),
    ), code


def _emoji_picture(emoji, product=templates.EMOJI_PRODUCT):
    return EMOJI_PICTURE.format(product=product, emoji=emoji)


def _shown(address, small=False):
    """A picture's address as this page loads it: ours from this site (whatever PUBLIC_BASE_URL's host),
    ``small``: its preview (the phone preview is not much wider)."""
    if small and media.preview_of(address or ""):
        address = media.preview_of(address)
    name = media.name_of(address or "")
    return url_for("media.serve", name=name) if name else (address or "")


def _preview_text(text):
    """The owner's text as LINE shows it: emoji as pictures, ``{name}`` as a sample name."""
    out, position = [], 0
    pattern = re.compile(re.escape(templates.NAME_TOKEN) + "|" + templates.EMOJI_TOKEN.pattern)
    for found in pattern.finditer(text or ""):
        out.append(escape(text[position:found.start()]))
        if found.group(0) == templates.NAME_TOKEN:
            out.append(Markup('<span class="lt-name">{}</span>').format(_("Wang Xiaoming")))
        else:
            out.append(Markup('<img class="lt-emoji" src="{}" alt="">').format(
                _emoji_picture(found.group(2), found.group(1) or templates.EMOJI_PRODUCT)))
        position = found.end()
    out.append(escape((text or "")[position:]))
    return Markup("").join(out)
