"""The contacts list's advanced search (顯示進階查詢): the segment builder's filters narrow the list, its count and
the CSV; the count the page's script asks for while the owner chooses; saving, picking, renaming and deleting
saved segments; refused filters said at their field, changing nothing; another shop's owner sees nothing."""
import secrets
from datetime import date, datetime, timedelta

import pytest

from tests.test_contacts import read_csv, rows_of
from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import AuditEntry, Contact, Message, Segment, utcnow


def add(app, channel_id, name, wrote_days_ago=None, **values):
    with app.app_context():
        values.setdefault("followed_at", datetime(2026, 3, 1, 2, 0))
        contact = Contact(channel_id=channel_id, line_user_id="U" + secrets.token_hex(16), display_name=name,
                          **values)
        db.session.add(contact)
        db.session.flush()
        if wrote_days_ago is not None:
            db.session.add(Message(channel_id=channel_id, contact_id=contact.id, direction="in", type="text",
                                   text="在嗎", sent_at=utcnow() - timedelta(days=wrote_days_ago)))
        db.session.commit()


@pytest.fixture
def shop(app, owner):
    """The signed-in owner's shop: two in Taipei who filled the form (one of them blocked), one in New Taipei,
    one who never did; returns the slug."""
    channel_id = make_channel(app, owner)["id"]
    add(app, channel_id, "林小美", city="TPE", gender="female", birthday=date(1990, 3, 15),
        form_filled_at=datetime(2026, 3, 2), marketing_consent=True, wrote_days_ago=1)
    add(app, channel_id, "陳大文", city="TPE", gender="male", form_filled_at=datetime(2026, 3, 2),
        blocked_at=datetime(2026, 3, 3))
    add(app, channel_id, "王阿明", city="NWT", gender="male", form_filled_at=datetime(2026, 3, 4), wrote_days_ago=40)
    add(app, channel_id, "路過的人")
    return owner


def names_on(html, candidates=("林小美", "陳大文", "王阿明", "路過的人")):
    return {name for name in candidates if f">{name}</a>" in html}


def test_the_advanced_search_narrows_the_list_and_says_how_many_match(client, shop):
    plain = client.get(f"/c/{shop}/contacts").get_data(as_text=True)
    assert "Show advanced search" in plain and '<details id="advanced" class="advanced-search">' in plain
    assert rows_of(plain) == 4  # the plain list: everyone, blocked ones marked

    response = client.get(f"/c/{shop}/contacts", query_string={"advanced": "1", "city": "TPE", "form_filled": "yes"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert names_on(html) == {"林小美"}  # 陳大文 is in Taipei and filled it in, but blocked the account
    assert '<details id="advanced" class="advanced-search" open>' in html
    assert "1 contact matches (blocked ones are always left out)" in html
    assert 'value="TPE" checked' in html and 'value="yes" checked' in html

    every = client.get(f"/c/{shop}/contacts", query_string={"advanced": "1"}).get_data(as_text=True)
    assert names_on(every) == {"林小美", "王阿明", "路過的人"}
    assert "3 contacts match (blocked ones are always left out)" in every


@pytest.mark.parametrize("query, names", [
    ({"city": ["TPE", "NWT"]}, {"林小美", "王阿明"}),
    ({"gender": "male"}, {"王阿明"}),
    ({"birthday_month": "3"}, {"林小美"}),
    ({"age_min": "30", "age_max": "60"}, {"林小美"}),
    ({"form_filled": "no"}, {"路過的人"}),
    ({"friend_since_from": "2026-03-01", "friend_since_to": "2026-03-01"}, {"林小美", "王阿明", "路過的人"}),
    ({"friend_since_to": "2026-02-28"}, set()),
    ({"messaged_within_days": "7"}, {"林小美"}),
    ({"messaged_within_days": "60", "q": "王"}, {"王阿明"}),  # with the search box
])
def test_every_filter_of_the_form_reaches_the_list(client, shop, query, names):
    html = client.get(f"/c/{shop}/contacts", query_string=query).get_data(as_text=True)
    assert names_on(html) == names


def test_the_csv_follows_the_chosen_filters_and_the_audit_log_says_which(app, client, shop):
    page = client.get(f"/c/{shop}/contacts", query_string={"advanced": "1", "city": ["TPE", "NWT"],
                                                            "gender": "male"}).get_data(as_text=True)
    start = page.index('href="/c/' + shop + '/contacts.csv')
    href = page[start + 6:page.index('"', start + 6)].replace("&amp;", "&")
    assert "city=TPE" in href and "city=NWT" in href and "gender=male" in href
    rows = read_csv(client.get(href))
    assert [row[1] for row in rows[1:]] == ["王阿明"]
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="contacts.exported"))
        assert entry.detail == {"search": None, "filters": "city=TPE,NWT; gender=male"}


def test_the_live_count_answers_what_the_list_would_show(client, shop):
    response = client.get(f"/c/{shop}/contacts/count", query_string={"city": "TPE", "q": "", "age_min": ""})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {"contacts": 1, "text": "1 contact matches (blocked ones are always left out)"}
    assert client.get(f"/c/{shop}/contacts/count").get_json()["contacts"] == 3  # every friend, no blocked one
    client.get("/?lang=zh_Hant_TW")
    body = client.get(f"/c/{shop}/contacts/count", query_string={"gender": "male", "form_filled": "yes"}).get_json()
    assert body == {"contacts": 1, "text": "符合的客戶共 1 位（封鎖者一律排除）"}


def test_a_filter_the_count_cannot_read_is_said_in_the_owners_language(client, shop):
    response = client.get(f"/c/{shop}/contacts/count", query_string={"age_min": "abc", "birthday_month": "13"})
    assert response.status_code == 400
    body = response.get_json()
    assert set(body["problems"]) == {"age_min", "birthday_month"}
    assert "youngest age must be a whole number" in body["problems"]["age_min"]
    client.get("/?lang=zh_Hant_TW")
    body = client.get(f"/c/{shop}/contacts/count", query_string={"birthday_month": "13"}).get_json()
    assert body["text"] == "「13」不是月份：月份是 1 到 12 的數字。"


def test_refused_filters_are_said_at_their_field_and_narrow_nothing(client, shop):
    response = client.get(f"/c/{shop}/contacts", query_string={
        "advanced": "1", "city": "TPE", "age_min": "40", "age_max": "30", "friend_since_from": "2026-13-01"})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "The oldest age (30) is below the youngest (40)." in html
    assert "“2026-13-01” is not a date: write it as 2026-03-01." in html
    assert 'id="seg-age_max-error"' in html and 'aria-invalid="true" aria-describedby="seg-age_max-error"' in html
    assert names_on(html) == {"林小美", "陳大文", "王阿明", "路過的人"}  # the list as without the search
    assert 'value="2026-13-01"' in html  # what was typed stays in its field to be corrected
    assert '<details id="advanced" class="advanced-search" open>' in html


def test_the_builder_speaks_chinese_by_default(client, shop):
    client.get("/?lang=zh_Hant_TW")
    html = client.get(f"/c/{shop}/contacts", query_string={"advanced": "1"}).get_data(as_text=True)
    for words in ("顯示進階查詢", "生日月份", "臺北市", "3月", "年齡（以台北今天計算）", "已填寫表格",
                  "符合的客戶共 3 位（封鎖者一律排除）", "將這些條件儲存為客群"):
        assert words in html, words
    assert 'src="/static/js/segments.js"' in html and "data-count-url=\"/c/" + shop + '/contacts/count"' in html


def _segment_ids(app):
    with app.app_context():
        return {s.name: (s.id, s.filters) for s in db.session.scalars(db.select(Segment))}


def test_the_shown_filters_are_saved_as_a_segment_and_picked_again(app, client, shop):
    page = client.get(f"/c/{shop}/contacts", query_string={"advanced": "1", "city": ["TPE", "NWT"],
                                                            "form_filled": "yes"}).get_data(as_text=True)
    assert 'action="/c/' + shop + '/segments"' in page
    assert '<input type="hidden" name="city" value="TPE"><input type="hidden" name="city" value="NWT">' in page
    saved = client.post(f"/c/{shop}/segments", data={"name": "雙北 填表", "city": ["TPE", "NWT"],
                                                      "form_filled": "yes"})
    assert saved.status_code == 302
    assert saved.headers["Location"].startswith(f"/c/{shop}/contacts?advanced=1&city=TPE&city=NWT&form_filled=yes")
    [(name, (segment_id, filters))] = _segment_ids(app).items()
    assert name == "雙北 填表" and filters == {"city": ["TPE", "NWT"], "form_filled": True}
    html = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "The segment “雙北 填表” is saved" in html
    assert names_on(html) == {"林小美", "王阿明"}
    assert 'aria-current="true">雙北 填表</a>' in html  # the one shown now
    everyone = client.get(f"/c/{shop}/contacts").get_data(as_text=True)
    assert "Saved segments" in everyone and ">雙北 填表</a>" in everyone
    assert 'aria-current="true"' not in everyone
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="segment.saved"))
        assert entry.target == "雙北 填表" and entry.detail == {"filters": "city=TPE,NWT; form_filled=yes"}


def test_a_name_taken_or_missing_is_said_and_nothing_is_saved(app, client, shop):
    assert client.post(f"/c/{shop}/segments", data={"name": "台北", "city": "TPE"}).status_code == 302
    again = client.post(f"/c/{shop}/segments", data={"name": " 台北 ", "city": "NWT"})
    html = again.get_data(as_text=True)
    assert again.status_code == 400
    assert "There is a segment named “台北” already: choose another name." in html
    assert 'id="segment-name-error"' in html
    assert 'value="NWT" checked' in html and names_on(html) == {"王阿明"}  # the filters it was asked to save
    empty = client.post(f"/c/{shop}/segments", data={"name": "", "city": "NWT"})
    assert empty.status_code == 400 and "Give the segment a name." in empty.get_data(as_text=True)
    bad = client.post(f"/c/{shop}/segments", data={"name": "壞的", "city": "XYZ"})
    assert bad.status_code == 400 and "“XYZ” is not a city or county" in bad.get_data(as_text=True)
    assert {name: filters for name, (_id, filters) in _segment_ids(app).items()} == {"台北": {"city": ["TPE"]}}


def test_a_segment_is_renamed_and_deleted(app, client, shop):
    client.post(f"/c/{shop}/segments", data={"name": "台北", "city": "TPE"})
    client.post(f"/c/{shop}/segments", data={"name": "新北", "city": "NWT"})
    ids = _segment_ids(app)
    taken = client.post(f"/c/{shop}/segments/{ids['新北'][0]}/rename", data={"name": "台北"})
    html = taken.get_data(as_text=True)
    assert taken.status_code == 400 and "There is a segment named “台北” already" in html
    assert f'id="rename-{ids["新北"][0]}-error"' in html
    renamed = client.post(f"/c/{shop}/segments/{ids['新北'][0]}/rename", data={"name": "新北市的朋友"})
    assert renamed.status_code == 302
    assert "The segment “新北” is now called “新北市的朋友”." in client.get(renamed.headers["Location"]).get_data(
        as_text=True)
    assert set(_segment_ids(app)) == {"台北", "新北市的朋友"}
    deleted = client.post(f"/c/{shop}/segments/{ids['台北'][0]}/delete")
    assert deleted.status_code == 302
    html = client.get(deleted.headers["Location"]).get_data(as_text=True)
    assert "The segment “台北” is deleted." in html and ">台北</a>" not in html
    assert set(_segment_ids(app)) == {"新北市的朋友"}
    with app.app_context():
        actions = [e.action for e in db.session.scalars(db.select(AuditEntry).order_by(AuditEntry.id))
                   if e.action.startswith("segment.")]
    assert actions == ["segment.saved", "segment.saved", "segment.renamed", "segment.deleted"]


def test_another_shops_owner_gets_404_from_every_page_and_changes_nothing(app, client, shop, make_shop, login):
    client.post(f"/c/{shop}/segments", data={"name": "台北", "city": "TPE"})
    [(segment_id, _filters)] = _segment_ids(app).values()
    _other, other_owner = make_shop("calm-tea", "平靜茶坊")
    make_channel(app, "calm-tea")
    client.post("/logout")
    login(other_owner)
    for path in (f"/c/{shop}/contacts?advanced=1&city=TPE", f"/c/{shop}/contacts/count?city=TPE",
                 f"/c/{shop}/contacts.csv?city=TPE"):
        response = client.get(path)
        assert response.status_code == 404 and "林小美" not in response.get_data(as_text=True)
    for path, data in ((f"/c/{shop}/segments", {"name": "偷看", "city": "TPE"}),
                       (f"/c/{shop}/segments/{segment_id}/rename", {"name": "改掉"}),
                       (f"/c/{shop}/segments/{segment_id}/delete", {}),
                       (f"/c/calm-tea/segments/{segment_id}/rename", {"name": "改掉"}),  # their own shop's URL
                       (f"/c/calm-tea/segments/{segment_id}/delete", {})):
        assert client.post(path, data=data).status_code == 404, path
    assert set(_segment_ids(app)) == {"台北"}
    assert "台北" not in client.get("/c/calm-tea/contacts").get_data(as_text=True)


def test_staff_use_the_advanced_search_for_any_shop(app, client, shop, make_user, login):
    client.post("/logout")
    staff = make_user(staff=True)
    login(staff)
    client.get("/?lang=en")
    html = client.get(f"/c/{shop}/contacts", query_string={"city": "NWT"}).get_data(as_text=True)
    assert names_on(html) == {"王阿明"}
    assert client.post(f"/c/{shop}/segments", data={"name": "新北", "city": "NWT"}).status_code == 302
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="segment.saved"))
        assert entry.actor == staff and entry.target == "新北"
