"""The holder's account pages of a running `signserver ra serve`: a field too long or with a
control character shows the form again with the error on that field, in the holder's language,
and what was typed put back (never a password, a one-time password or a code)."""

from __future__ import annotations

import re

from tests.ra.running import PASSWORD, create_account
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.ra.web.test_account_pages import Visitor, noticed

AT_MOST_256 = {"zh-Hant": "最多 256 個字元。", "en": "At most 256 characters."}
CONTROL = {"zh-Hant": "此欄不可包含控制字元（例如定位字元或換行）。",
           "en": "This field may not contain control characters (such as tabs or line breaks)."}
ACCOUNT_TOO_LONG = {"zh-Hant": "帳戶名稱最多 64 個字元。", "en": "An account name has at most 64 characters."}


def field_error(response, name: str) -> str:
    found = re.search(rf'id="field-{name}-error"><span class="visually-hidden">[^<]*</span>\s*([^<]+)<',
                      response.text)
    return found.group(1).strip() if found else ""


def test_an_overlong_field_is_said_on_the_password_form_in_the_holders_language(ra_process, core):
    create_account(core, "p1-long-fields")
    visitor = Visitor(ra_process, "zh-Hant")
    visitor.get("/password")
    long_account = "a" * 300
    shown = visitor.post("/password", {"account": long_account, "current_password": "c" * 300,
                                       "new_password": "N" * 300 + "1", "confirmation": "N" * 300 + "1",
                                       "captcha": visitor.captcha()})
    assert shown.status_code == 400 and 'action="/password"' in shown.text, shown.text[:500]
    assert field_error(shown, "account") == ACCOUNT_TOO_LONG["zh-Hant"]
    assert field_error(shown, "current_password") == AT_MOST_256["zh-Hant"]
    assert field_error(shown, "new_password") == AT_MOST_256["zh-Hant"]
    assert field_error(shown, "confirmation") == AT_MOST_256["zh-Hant"]  # not "not the same"
    assert f'value="{long_account}"' in shown.text  # what was typed, to put right
    assert "c" * 300 not in shown.text and "N" * 300 not in shown.text  # never a password

    visitor.get("/password")
    control = visitor.post("/password", {"account": "p1-long\x01fields", "current_password": "Pass\x07word-1",
                                         "new_password": "Brand-new-pass-2", "confirmation": "Brand-new-pass-2",
                                         "captcha": visitor.captcha()})
    assert control.status_code == 400 and 'action="/password"' in control.text, control.text[:500]
    assert field_error(control, "account") == field_error(control, "current_password") == CONTROL["zh-Hant"]
    assert 'value="p1-longfields"' in control.text and "Pass" not in control.text

    visitor.get("/password")
    mismatch = visitor.post("/password", {"account": "p1-long-fields", "current_password": PASSWORD,
                                          "new_password": "N" * 300 + "1", "confirmation": "Brand-new-pass-2",
                                          "captcha": visitor.captcha()})
    assert field_error(mismatch, "new_password") == AT_MOST_256["zh-Hant"]
    assert not field_error(mismatch, "confirmation")  # the new password's error, not a mismatch


def test_an_overlong_field_is_said_on_the_sign_in_form(ra_process, core):
    visitor = Visitor(ra_process, "en")
    visitor.get("/sign-in")
    shown = visitor.post("/sign-in", {"account": "n\x07ame", "password": "w" * 300, "otp": "12\x003456",
                                      "captcha": visitor.captcha(), "next": "/holder\x00"})
    assert shown.status_code == 400 and 'action="/sign-in"' in shown.text, shown.text[:500]
    assert field_error(shown, "account") == CONTROL["en"] and field_error(shown, "otp") == CONTROL["en"]
    assert field_error(shown, "password") == AT_MOST_256["en"]
    assert 'value="name"' in shown.text and "w" * 300 not in shown.text and "123456" not in shown.text
    assert 'name="next" value="/holder"' in shown.text


def test_an_overlong_field_is_said_on_the_new_link_form(ra_process):
    visitor = Visitor(ra_process, "zh-Hant")
    visitor.get("/notice/new-link")
    shown = visitor.post("/notice/new-link", {"address": "k@example.mo\x01", "captcha": visitor.captcha()})
    assert shown.status_code == 400 and 'action="/notice/new-link"' in shown.text, shown.text[:500]
    assert field_error(shown, "address") == CONTROL["zh-Hant"]
    assert 'value="k@example.mo"' in shown.text
    visitor.get("/notice/new-link")
    too_long = visitor.post("/notice/new-link", {"address": "k" * 400 + "@example.mo", "captcha": "A" * 40})
    assert too_long.status_code == 400 and field_error(too_long, "address") == "最多 320 個字元。"
    assert field_error(too_long, "captcha") == "最多 32 個字元。"


def test_an_overlong_code_is_said_on_the_notice_page(ra_process, inbox, core):
    _, link, _ = noticed(ra_process, inbox, core, "p1-long-code")
    visitor = Visitor(ra_process, "en")
    visitor.get(link)
    visitor.get("/notice")
    assert visitor.post("/notice", {"action": "send"}).status_code == 303
    visitor.get("/notice")
    shown = visitor.post("/notice", {"action": "verify", "code": "1" * 40})
    assert shown.status_code == 400 and 'action="/notice"' in shown.text, shown.text[:500]
    assert field_error(shown, "code") == "At most 16 characters."
    control = visitor.post("/notice", {"action": "verify\x01", "code": "12\x003456"})
    assert control.status_code == 400 and field_error(control, "code") == CONTROL["en"], control.text[:500]
