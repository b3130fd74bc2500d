"""The browser harness itself: Debian's Chromium reaches the RA's pages in Traditional Chinese by
default, the accessibility check passes on the home page and fails on a page that breaks WCAG,
screenshots cover the whole page, a captcha's answer is read from the browser's session, and
Chromium leaves nothing in the system's temporary directory."""

from __future__ import annotations

import struct
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.browser.axe import accessibility_violations, axe_version
from tests.browser.conftest import (captcha_answer, check_accessibility, chromium, close_chromium, screenshot,
                                    wait_until)

# The browser harness itself does not depend on the store.
pytestmark = pytest.mark.one_store

UNLABELLED_FORM = """<!doctype html><html lang="en"><head><title>Unlabelled</title></head><body><main>
<h1>A form without labels</h1><form><input type="text" name="account"><button type="submit"></button></form>
</main></body></html>"""


def data_url(html: str) -> str:
    return "data:text/html;charset=utf-8," + urllib.parse.quote(html)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_home_page_opens_in_traditional_chinese_and_passes_the_accessibility_check(stack, browser):
    browser.get(stack.url("/"))
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-Hant"
    assert browser.execute_script("return navigator.languages") == ["zh-TW", "zh"]
    check_accessibility(browser)
    shot = screenshot(browser, "smoke-home")
    width, height = png_size(shot.read_bytes())
    assert width >= 1280 and height >= browser.execute_script("return document.documentElement.scrollHeight")


def test_another_language_is_asked_for_by_a_browser_of_its_own(stack, browser_in):
    english = browser_in("en-US,en")
    english.get(stack.url("/"))
    assert english.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"


def test_a_page_that_breaks_wcag_fails_the_check(browser):
    browser.get(data_url(UNLABELLED_FORM))
    assert axe_version().startswith("4.")
    found = {v["id"] for v in accessibility_violations(browser)}
    assert {"label", "button-name"} <= found
    with pytest.raises(AssertionError, match=r"label \((critical|serious)\).*input"):
        check_accessibility(browser)
    check_accessibility(browser, "h1")  # a part without fault passes


def test_the_captcha_answer_is_read_from_the_browser_session(stack, browser):
    browser.get(stack.url("/password"))  # a form with a captcha: a challenge for this browser's session
    answer = captcha_answer(stack, browser)
    assert len(answer) == 5 and answer.isalnum()
    session = stack.web_session(browser)
    assert session["kind"] == "anonymous" and session["data"]["captcha"]["answer"] == answer


def test_a_new_visitor_has_no_cookie_from_the_test_before(stack, browser):
    assert browser.get_cookie("ra_session") is None
    browser.get(stack.url("/captcha.png"))
    wait_until(browser, lambda b: b.get_cookie("ra_session"), 10)


def test_a_tall_page_is_captured_whole(browser):
    browser.get(data_url('<!doctype html><html lang="en"><head><title>Tall</title></head><body>'
                         '<main><h1>Tall</h1><div style="height:3000px"></div><p>end</p></main></body></html>'))
    width, height = png_size(screenshot(browser, "smoke-tall").read_bytes())
    assert width >= 1280 and height >= 3000


def test_a_holder_signs_in_to_the_core_with_one_fresh_code_after_another(stack):
    holder = stack.new_holder()
    for _ in range(4):  # more codes than one 30-second step holds: the core's clock moves on
        assert stack.core.authenticate_holder(holder.account, holder.password, holder.otp()).account == holder.account
    [certificate] = stack.core.list_certificates(holder.account)
    assert certificate.serial == holder.serial and certificate.status == "valid"


def test_an_opened_renewal_brings_its_notice_with_the_link(stack):
    holder = stack.new_holder(emails=("web-notice@example.mo",))
    renewal = stack.open_renewal(holder)
    assert renewal.shown["serial"] == holder.serial and renewal.shown["state"] == "awaiting_identity"
    assert renewal.link.startswith(f"{stack.ra_url}/notice/{renewal.id}/")


def test_an_operator_account_is_made_with_its_authenticator(stack):
    operator = stack.new_operator()
    assert operator.name in [o["name"] for o in stack.command("operator", "list")]
    first, second = operator.otp(), operator.otp()
    assert first != second and first.isdigit() and len(second) == 6


def test_a_renewal_is_brought_to_its_activation_without_the_pages(stack):
    holder = stack.new_holder(emails=("web-steps@example.mo",))
    renewal = stack.open_renewal(holder)
    assert stack.verify_identity(holder, renewal)["state"] == "awaiting_application"
    signed = stack.sign_application(holder, renewal)
    assert signed["state"] == "awaiting_activation" and signed["pending_list"] == "activation"


def test_chromium_leaves_nothing_in_the_temporary_directory():
    # Chromium makes a folder there for its singleton socket and leaves it at every quit: the
    # harness gives it a folder of its own, and removes it.
    began = time.time() - 1
    driver = chromium()
    try:
        driver.get(data_url("<title>blank</title>"))
    finally:
        close_chromium(driver)
    assert not Path(driver.temporary_folder).exists()
    left = [path for path in Path(tempfile.gettempdir()).glob("org.chromium.Chromium.*")
            if path.lstat().st_mtime >= began]
    assert left == []
