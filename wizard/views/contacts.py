"""A shop's contacts and each contact's conversation, for the shop's owners and for staff.

- ``/c/<slug>/contacts``: the list (search, the advanced search's filters, pages), ``/c/<slug>/contacts.csv``
  its export, ``/c/<slug>/contacts/count`` the advanced search's live count (static/js/segments.js);
- ``POST /c/<slug>/segments`` saves the applied filters under a name, ``…/segments/<id>/rename`` and
  ``…/segments/<id>/delete`` (which asks first on GET) (customers/segments.py);
- ``/c/contacts/<id>``: one contact with the conversation and the box to reply (opening it marks the
  customer's messages read on LINE); ``POST /c/contacts/<id>/reply`` sends what was typed;
- ``/c/contacts/<id>/messages/<message id>/content``: a picture, video, sound or file the customer sent.

Not under /shops/ (the staff console's prefix, staff only): owners use these pages. A contact's pages name
the contact alone, and the shop is the contact's: whoever may not see that shop gets 404, as for a contact
that does not exist. The queries are customers/contacts.py's, shared with the CSV and the API.
"""
from flask import (Blueprint, Response, abort, flash, jsonify, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy.orm import undefer
from wtforms import HiddenField, StringField, TextAreaField

from .. import audit, queue
from ..customers import consent, contacts, conversation, replies, segments
from ..extensions import db
from ..models import Channel, Contact, Message, MessageContent, Outbox, utcnow
from ..statuses import ContentStatus, OutboxStatus
from . import checked_post, shop_for

bp = Blueprint("contacts", __name__, url_prefix="/c")

STATUS_LABELS = {
    OutboxStatus.QUEUED: _l("Sending…"),
    OutboxStatus.SENDING: _l("Sending…"),
    OutboxStatus.SENT: _l("Delivered to LINE"),
    OutboxStatus.FAILED: _l("Not sent: LINE refused it"),
    OutboxStatus.DEAD: _l("Not sent: LINE could not be reached"),
    OutboxStatus.UNKNOWN: _l("May not have arrived"),
}


class ReplyForm(FlaskForm):
    text = TextAreaField(_l("Your message"))
    key = HiddenField()


class ResendForm(FlaskForm):
    resend_key = HiddenField()  # not "key": the reply box on the same page has its own


@bp.before_request
@login_required
def signed_in():
    pass


@bp.app_context_processor
def segment_builder_choices():
    """The builder's lists for every page that includes it (contacts/_segment_builder.html), in its language:
    registered with the blueprint, so another page (a send plan's form) gets them without asking."""
    return {"segment_choices": segments.choices}


def _contact(contact_id):
    """The contact and its shop, or 404 for a contact the person may not see (or none at all)."""
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    shop = db.session.get(Channel, contact.channel_id).shop
    if not current_user.can_see(shop):
        abort(404)
    return contact, shop


class SegmentForm(FlaskForm):
    name = StringField(_l("Name of the segment"))


@bp.get("/<slug>/contacts")
def index(slug):
    shop = shop_for(slug)
    wanted = contacts.ContactFilter.from_args(request.args)
    return _index(shop, wanted)


def _index(shop, wanted, save_form=None, rename_problem=None, code=200, values=None):
    """The list page; ``values``: what the builder's fields show (default: the query's)."""
    problems = list(wanted.problems) + list(wanted.filter_problems.values())
    try:
        page = contacts.list_contacts(shop, wanted)
    except contacts.BadRequest as exc:
        problems.append(str(exc))
        wanted.page = 1
        page = contacts.list_contacts(shop, wanted)
    saved = segments.saved(shop)
    return render_template(
        "contacts/index.html", shop=shop, page=page, wanted=wanted, problems=problems, name_of=contacts.name_of,
        unread=conversation.unread_counts([c.id for c in page.rows]), count_text=contacts.count_text,
        saved=saved, segment_args=segments.as_args, save_form=save_form or SegmentForm(formdata=None),
        rename_problem=rename_problem, builder_values=request.args if values is None else values,
    ), 400 if problems or code == 400 else code


@bp.get("/<slug>/contacts/count")
def count(slug):
    """The advanced search's count while the owner chooses (static/js/segments.js sends the form's fields as
    they are): JSON ``{"contacts", "text"}``, or 400 with ``{"problems": {key: message}, "text"}`` in the
    page's language. What the list would show if the form were sent now, so the two never disagree."""
    shop = shop_for(slug)
    wanted = contacts.ContactFilter.from_args(request.args)
    if wanted.filter_problems:
        problems = {key: str(message) for key, message in wanted.filter_problems.items()}
        return jsonify(problems=problems, text=" ".join(problems.values())), 400
    wanted.advanced = True  # the builder counts its audience: blocked friends never
    total = contacts.count_contacts(shop, wanted)
    response = jsonify(contacts=total, text=contacts.count_text(total, wanted))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<slug>/segments")
def save_segment(slug):
    """The filters the list shows (hidden fields of the save form) under a new name."""
    shop = shop_for(slug)
    form = SegmentForm()
    if not form.validate_on_submit():
        abort(400)  # only a missing or stale CSRF token fails here
    wanted = contacts.ContactFilter.from_args(request.form)
    segment, problems = segments.save(shop, form.name.data, segments.from_args(request.form))
    if problems:
        form.name.errors = [str(problems.pop("name"))] if "name" in problems else []
        wanted.filter_problems = dict(wanted.filter_problems, **problems)
        return _index(shop, wanted, save_form=form, code=400, values=request.form)
    audit.record("segment.saved", shop=shop, target=segment.name, filters=segments.codes(segment.filters))
    db.session.commit()
    flash(_("The segment “%(name)s” is saved: pick it under Saved segments.", name=segment.name), "success")
    return redirect(_segment_url(shop, segment))


def _segment_url(shop, segment):
    return url_for(".index", slug=shop.slug, advanced="1", **segments.as_args(segment.filters)) + "#advanced"


def _saved_one(shop, segment_id):
    segment = segments.saved_one(shop, segment_id)
    if segment is None:
        abort(404)
    return segment


@bp.post("/<slug>/segments/<int:segment_id>/rename")
def rename_segment(slug, segment_id):
    shop = shop_for(slug)
    segment = _saved_one(shop, segment_id)
    form = SegmentForm()
    if not form.validate_on_submit():
        abort(400)
    old = segment.name
    problem = segments.rename(segment, shop, form.name.data)
    if problem:
        db.session.rollback()
        return _index(shop, contacts.ContactFilter.from_args(request.args), rename_problem=(segment_id, problem),
                      code=400)
    audit.record("segment.renamed", shop=shop, target=segment.name, was=old)
    db.session.commit()
    flash(_("The segment “%(old)s” is now called “%(name)s”.", old=old, name=segment.name), "success")
    return redirect(url_for(".index", slug=shop.slug) + "#saved-segments")


@bp.route("/<slug>/segments/<int:segment_id>/delete", methods=["GET", "POST"])
def delete_segment(slug, segment_id):
    """GET asks first (as a template's delete does); POST deletes. Send plans made with the segment keep a
    copy of its conditions, so they send as before."""
    shop = shop_for(slug)
    segment = _saved_one(shop, segment_id)
    if request.method == "GET":
        return render_template("contacts/delete_segment.html", shop=shop, segment=segment)
    checked_post()
    name = segment.name
    segments.delete(segment)
    audit.record("segment.deleted", shop=shop, target=name)
    db.session.commit()
    flash(_("The segment “%(name)s” is deleted.", name=name), "success")
    return redirect(url_for(".index", slug=shop.slug) + "#saved-segments")


@bp.get("/<slug>/contacts.csv")
def export(slug):
    shop = shop_for(slug)
    wanted = contacts.ContactFilter.from_args(request.args)
    name = f"contacts-{shop.slug}-{utcnow():%Y%m%d-%H%M}.csv"
    # Every customer's personal data leaves the CRM in this file: who took it, and when, is on record.
    narrowed = {"filters": segments.codes(wanted.filters)} if wanted.advanced else {}
    audit.record("contacts.exported", shop=shop, target=name, search=wanted.q or None, **narrowed)
    db.session.commit()
    # Streamed: the first bytes leave at once and the rows follow as they are read (customers/contacts.py);
    # stream_with_context keeps the request (locale, time zone, session) for the generator.
    chunks = (chunk.encode("utf-8") for chunk in contacts.csv_chunks(shop, wanted))
    return Response(stream_with_context(chunks), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "X-Accel-Buffering": "no"})


def _page(contact, shop, form, code=200):
    channel = db.session.get(Channel, contact.channel_id)
    talk = conversation.for_contact(contact)
    how = replies.plan(contact)
    quota = replies.quota(channel) if channel.disconnected_at is None else None
    return render_template(
        "contacts/contact.html", shop=shop, contact=contact, channel=channel, talk=talk, plan=how, quota=quota,
        talk_version=conversation.version(talk),
        form=form, labels=STATUS_LABELS, name_of=contacts.name_of, now=utcnow(),
        submissions=consent.history(contact.id), describe_consent=consent.describe,
        resend_form=ResendForm(formdata=None, resend_key=replies.new_key()),
        chat_on=channel.chat_mode == "chat"), code


@bp.get("/contacts/<int:contact_id>")
def contact(contact_id):
    contact, shop = _contact(contact_id)
    conversation.opened(contact)
    conversation.seen(contact)
    form = ReplyForm(formdata=None, key=replies.new_key())
    return _page(contact, shop, form)


@bp.get("/contacts/<int:contact_id>/messages")
def messages(contact_id):
    """The conversation's list alone, for the page's script (static/js/conversation.js) to refresh it without
    reloading the page. What it shows is seen, and a new message of the customer is marked read on LINE as
    when the page is opened."""
    contact, _shop_ = _contact(contact_id)
    conversation.opened(contact)
    conversation.seen(contact)
    talk = conversation.for_contact(contact)
    response = Response(render_template(
        "contacts/_messages.html", contact=contact, talk=talk, talk_version=conversation.version(talk),
        labels=STATUS_LABELS, resend_form=ResendForm(formdata=None, resend_key=replies.new_key())),
        content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/contacts/<int:contact_id>/reply")
def reply(contact_id):
    contact, shop = _contact(contact_id)
    form = ReplyForm()
    if not form.validate_on_submit():
        abort(400)  # only a missing or stale CSRF token fails here
    try:
        row, created = replies.send(contact, form.text.data, form.key.data)
    except replies.NotSent as exc:
        form.text.errors = [str(exc)]
        if not replies.valid_key(form.key.data):
            form.key.data = replies.new_key()
        return _page(contact, shop, form, 400)
    if created:
        queue.send_message.try_now(row.id, row=f"outbox {row.id}")  # committed: else the sweep sends it
        flash(_("Your message is on its way by reply (free).") if row.method == "reply"
              else _("Your message is on its way by push (it counts against this month's messages)."), "success")
    else:
        flash(_("This message was sent already; it was not sent a second time."), "info")
    return redirect(url_for(".contact", contact_id=contact.id) + "#reply")


@bp.post("/contacts/<int:contact_id>/send-form")
def send_form(contact_id):
    """A new form link for this customer (theirs expired, or they ask for it): pushed, once per press."""
    contact, shop = _contact(contact_id)
    form = ResendForm()
    if not form.validate_on_submit():
        abort(400)  # only a missing or stale CSRF token fails here
    try:
        row, created = replies.send_form(contact, form.resend_key.data)
    except replies.NotSent as exc:
        flash(str(exc), "error")
        return redirect(url_for(".contact", contact_id=contact.id))
    if created:
        queue.send_message.try_now(row.id, row=f"outbox {row.id}")  # committed: else the sweep sends it
        audit.record("contact.form_sent", shop=shop, target=contact.line_user_id)
        db.session.commit()
        flash(_("The customer data form is on its way with a new link (by push: it counts against this "
                "month's messages)."), "success")
    else:
        flash(_("The form was sent already; it was not sent a second time."), "info")
    return redirect(url_for(".contact", contact_id=contact.id))


@bp.post("/contacts/<int:contact_id>/outbox/<int:outbox_id>/send-again")
def send_again(contact_id, outbox_id):
    """A message whose fate is unknown (a worker stopped while LINE was asked to reply) pushed again, on a
    person's word: it may have arrived, which is why it is never re-sent on its own."""
    from ..outgoing import outbox
    contact, shop = _contact(contact_id)
    if not FlaskForm().validate_on_submit():
        abort(400)  # only a missing or stale CSRF token fails here
    row = db.session.get(Outbox, outbox_id)
    if row is None or row.contact_id != contact.id:
        abort(404)
    if contact.blocked:
        flash(_("Not sent: this customer has blocked the account, and LINE delivers nothing to them."), "error")
    elif outbox.send_again(row.id):
        queue.send_message.try_now(row.id, row=f"outbox {row.id}")  # committed: else the sweep sends it
        audit.record("contact.message_sent_again", shop=shop, target=contact.line_user_id, purpose=row.purpose)
        db.session.commit()
        flash(_("The message is on its way again, by push (it counts against this month's messages)."), "success")
    else:
        flash(_("This message is not of unknown fate any more; it was not sent again."), "info")
    return redirect(url_for(".contact", contact_id=contact.id) + "#conversation-title")


@bp.get("/contacts/<int:contact_id>/messages/<int:message_id>/content")
def content(contact_id, message_id):
    from ..customers import content as kept
    contact, _shop_ = _contact(contact_id)
    message = db.session.get(Message, message_id)
    if message is None or message.contact_id != contact.id or message.direction != "in":
        abort(404)
    row = db.session.scalar(db.select(MessageContent)
                            .filter_by(message_id=message.id, status=ContentStatus.READY)
                            .options(undefer(MessageContent.data)))
    if row is None:
        abort(404)
    return kept.response(message, row)
