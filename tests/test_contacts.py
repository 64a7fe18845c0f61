"""The contacts page and its CSV: the shop's own friends only (staff: any shop's), searchable by name, mobile
number and e-mail however they are typed, paged on the server; the CSV opens in Excel in Taiwan (UTF-8 with
a BOM), names its columns in the page's language and never hands Excel a formula."""
import csv
import io
import secrets
from datetime import datetime, timedelta

import pytest

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import Contact


def add_contacts(app, channel_row_id, people):
    """Contacts as the worker and the form leave them, written straight to the database."""
    with app.app_context():
        base = datetime(2026, 3, 1, 2, 0)
        for n, person in enumerate(people):
            values = dict(line_user_id="U" + secrets.token_hex(16), followed_at=base + timedelta(hours=n))
            values.update(person)
            db.session.add(Contact(channel_id=channel_row_id, **values))
        db.session.commit()


@pytest.fixture
def shop(app, owner):
    """The signed-in owner's shop with a channel and three contacts; returns the slug."""
    channel = make_channel(app, owner)
    add_contacts(app, channel["id"], [
        {"display_name": "Mei", "customer_name": "林小美", "phone": "0912345678", "email": "mei@example.com",
         "form_filled_at": datetime(2026, 3, 2), "marketing_consent": True},
        {"display_name": "陳大文", "blocked_at": datetime(2026, 3, 3)},
        {"display_name": "=HYPERLINK(\"http://evil\")", "email": "-2+3@example.com"},
    ])
    return owner


def rows_of(html):
    return html.count('<tr role="row" data-contact=')


def test_the_list_shows_the_shops_friends_newest_first(client, shop):
    response = client.get(f"/c/{shop}/contacts")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and rows_of(html) == 3
    assert html.index("=HYPERLINK") < html.index("陳大文") < html.index("林小美")
    assert "On LINE: Mei" in html and "0912345678 · mei@example.com" in html
    assert 'data-blocked="true"' in html and "Blocked the account" in html
    assert 'data-form-filled="true"' in html and 'data-marketing="true"' in html
    assert "3 contacts · page 1 of 1" in html


@pytest.mark.parametrize("query, found", [
    ("林小美", ["林小美"]),
    ("mei", ["林小美"]),            # the LINE name, case-insensitive
    ("ＭＥＩ＠ＥＸＡＭＰＬＥ", ["林小美"]),  # full-width e-mail
    ("０９１２－３４５", ["林小美"]),    # full-width digits and dash
    ("+886 912 345 678", ["林小美"]),
    ("大文", ["陳大文"]),
    ("nobody", []),
    ("%", []),                      # a LIKE wildcard is only a character
])
def test_search_by_name_phone_and_email(client, shop, query, found):
    html = client.get(f"/c/{shop}/contacts", query_string={"q": query}).get_data(as_text=True)
    assert rows_of(html) == len(found), query
    for name in found:
        assert name in html


def test_paging_is_on_the_server(app, client, owner):
    channel = make_channel(app, owner)
    add_contacts(app, channel["id"], [{"display_name": f"客人 {n:03d}"} for n in range(120)])
    html = client.get(f"/c/{owner}/contacts").get_data(as_text=True)
    assert rows_of(html) == 50 and "客人 119" in html and "page 1 of 3" in html and 'rel="next"' in html
    html = client.get(f"/c/{owner}/contacts?page=3").get_data(as_text=True)
    assert rows_of(html) == 20 and "客人 000" in html and 'rel="prev"' in html
    response = client.get(f"/c/{owner}/contacts?page=9")
    assert response.status_code == 400 and "There is no page 9" in response.get_data(as_text=True)
    assert client.get(f"/c/{owner}/contacts?page=x").status_code == 400


def read_csv(response):
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    raw = response.data
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: Excel in Taiwan reads the Chinese
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))


def test_the_csv_columns_and_encoding(client, shop):
    rows = read_csv(client.get(f"/c/{shop}/contacts.csv"))
    assert rows[0] == ["LINE user ID", "LINE name", "Name", "Mobile phone", "E-mail", "Birthday", "Gender",
                       "City or county", "Friend since", "Blocked the account", "Form filled in",
                       "Marketing consent"]
    assert len(rows) == 4
    by_name = {row[1]: row for row in rows[1:]}
    mei = by_name["Mei"]
    # The mobile number with dashes, as Taiwan writes it: Excel keeps it as text, with its leading zero.
    assert mei[2:5] == ["林小美", "0912-345-678", "mei@example.com"]
    assert mei[8] == "2026-03-01 10:00"  # Taiwan time
    assert mei[9:] == ["No", "2026-03-02 08:00", "Yes"]
    assert by_name["陳大文"][9:] == ["Yes", "No", "No"]
    # Formula-looking cells are text, never run by Excel.
    evil = by_name["'=HYPERLINK(\"http://evil\")"]
    assert evil[4] == "'-2+3@example.com"


def test_each_export_of_the_customers_data_is_in_the_audit_log(app, client, shop):
    from wizard.models import AuditEntry
    client.get(f"/c/{shop}/contacts.csv?q=mei")
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="contacts.exported"))
        assert entry.actor.startswith("owner-") and entry.detail == {"search": "mei"}


def test_the_csv_speaks_the_pages_language_and_follows_the_search(client, shop):
    client.get("/?lang=zh_Hant_TW")
    rows = read_csv(client.get(f"/c/{shop}/contacts.csv", query_string={"q": "大文"}))
    assert rows[0][:5] == ["LINE 使用者 ID", "LINE 名稱", "姓名", "手機號碼", "電子郵件"]
    assert len(rows) == 2 and rows[1][1] == "陳大文" and rows[1][9] == "是"


def test_another_shops_owner_and_signed_out_people_see_nothing(app, client, shop, make_shop, login):
    other, other_owner = make_shop("calm-tea", "平靜茶坊")
    make_channel(app, other)
    client.post("/logout")
    for path in (f"/c/{shop}/contacts", f"/c/{shop}/contacts.csv"):
        assert client.get(path).status_code == 302  # to the sign-in page
    login(other_owner)
    for path in (f"/c/{shop}/contacts", f"/c/{shop}/contacts.csv", "/c/nowhere/contacts"):
        response = client.get(path)
        assert response.status_code == 404 and "林小美" not in response.get_data(as_text=True)
    with app.app_context():
        contact_id = db.session.scalar(db.select(Contact.id).filter_by(customer_name="林小美"))
    assert client.get(f"/c/contacts/{contact_id}").status_code == 404
    assert client.get("/c/contacts/999999").status_code == 404


def test_staff_see_any_shops_contacts_and_the_pages_link_to_them(app, client, shop, make_user, login):
    assert f'href="/c/{shop}/contacts"' in client.get(f"/setup/{shop}/connected").get_data(as_text=True)
    client.post("/logout")
    login(make_user(staff=True))
    client.get("/?lang=en")
    html = client.get(f"/c/{shop}/contacts").get_data(as_text=True)
    assert rows_of(html) == 3
    assert f'href="/c/{shop}/contacts"' in client.get(f"/shops/{shop}/").get_data(as_text=True)


def test_the_contacts_page_on_no_contacts(client, owner):
    html = client.get(f"/c/{owner}/contacts").get_data(as_text=True)
    assert "No contacts yet" in html


@pytest.mark.parametrize("page", ["²", "①", "0", "-1", "x"])
def test_a_page_number_that_is_not_one_is_said_never_a_500(app, client, owner, page):
    response = client.get(f"/c/{owner}/contacts?page={page}")
    assert response.status_code == 400
    api = client.get(f"/api/v1/shops/{owner}/contacts?page={page}")
    assert api.status_code == 400 and "page" in api.get_json()["message"]


def test_the_csv_streams_in_batches_read_in_the_pages_order(app, client, owner, monkeypatch):
    """The export is a generator response: rows go out batch by batch (each its own short query, read by
    keyset), every contact once and in the page's order, ties in the friend time included."""
    from wizard.customers import contacts
    monkeypatch.setattr(contacts, "CSV_BATCH", 7)
    channel = make_channel(app, owner)
    same = datetime(2026, 3, 1, 2, 0)
    add_contacts(app, channel["id"], [{"display_name": f"客人 {n:02d}", "followed_at": same if n % 3 else None}
                                      for n in range(30)])
    response = client.get(f"/c/{owner}/contacts.csv")
    assert response.is_streamed
    rows = read_csv(response)
    names = [row[1] for row in rows[1:]]
    assert len(names) == 30 and len(set(names)) == 30
    page = client.get(f"/c/{owner}/contacts").get_data(as_text=True)
    shown = [name for name in names if name in page]
    assert shown == sorted(shown, key=page.index)  # the same order as the page


def _statements_of(app, client, path):
    from sqlalchemy import event
    seen = []

    def remember(_conn, _cursor, statement, parameters, _context, _many):
        seen.append((statement, parameters))
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    return seen


def test_a_contacts_page_is_read_from_the_index_in_order_without_sorting_the_shop(app, client, owner):
    channel = make_channel(app, owner)
    add_contacts(app, channel["id"], [{"display_name": f"客人 {n}"} for n in range(60)])
    [(statement, parameters)] = [(s, p) for s, p in _statements_of(app, client, f"/c/{owner}/contacts?page=2")
                                 if "ORDER BY" in s and "contacts" in s]
    with app.app_context(), db.engine.connect() as connection:
        raw = connection.connection.driver_connection
        cursor = raw.cursor()
        if db.engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")  # a tiny, unanalysed table: sorting would look cheap
            cursor.execute("EXPLAIN " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = "\n".join(str(row) for row in cursor.fetchall())
        connection.rollback()
    assert "ix_contacts_channel_recent" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan  # the index gives the order
