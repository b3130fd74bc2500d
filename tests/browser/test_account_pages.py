"""The holder's account pages in Chromium (Traditional Chinese, the default): the password change of
document 000 with its captcha, the documents' lockout message after 5 wrong passwords, the sign-in
with the cloud-signature account and OTP, and the sign-in through the notice e-mail's link and an
e-mail code. Every page passes the accessibility check and is kept as a screenshot."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import captcha_answer, check_accessibility, press_and_wait, screenshot, wait_until

# What Chromium shows of the RA's pages does not depend on the store: the pages' behaviour on
# each store is tested over HTTP (tests/ra/web), on both.
pytestmark = pytest.mark.one_store

NEW_PASSWORD = "Brand-new-pass-2"
LOCKED_ZH = "已嘗試超過 5 次，請於 30 分鐘後再試。"


def type_into(browser, name: str, text: str) -> None:
    field = browser.find_element(By.ID, f"field-{name}")
    field.clear()
    field.send_keys(text)


def submit(browser, action: str = "") -> None:
    """Press the submit button of the form (the one whose hidden ``action`` is ``action``) and
    wait for the next page."""
    form = (browser.find_element(By.XPATH, f"//form[input[@name='action' and @value='{action}']]") if action
            else browser.find_element(By.CSS_SELECTOR, "main form"))
    press_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def change_password(stack, browser, account: str, current: str, new: str = NEW_PASSWORD) -> None:
    type_into(browser, "account", account)
    type_into(browser, "current_password", current)
    type_into(browser, "new_password", new)
    type_into(browser, "confirmation", new)
    type_into(browser, "captcha", captcha_answer(stack, browser))
    submit(browser)


def test_a_holder_changes_the_password_with_the_captcha(stack, browser):
    holder = stack.new_holder(prefix="web-password")
    browser.get(stack.url("/password"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "更改電子簽名證書密碼"
    labels = [label.text.split(" (")[0].split("（")[0] for label in browser.find_elements(By.CSS_SELECTOR, "main label")]
    assert labels[:4] == ["帳戶名稱", "舊密碼", "新密碼", "確認密碼"]  # the documents' fields, in their order
    check_accessibility(browser)
    screenshot(browser, "password")
    change_password(stack, browser, holder.account, holder.password)
    assert browser.find_element(By.TAG_NAME, "h1").text == "密碼已更改"
    check_accessibility(browser)
    assert stack.core.authenticate_holder(holder.account, NEW_PASSWORD, holder.otp()).account == holder.account


def test_the_lockout_message_after_five_wrong_passwords(stack, browser):
    holder = stack.new_holder(prefix="web-locked")
    browser.get(stack.url("/password"))
    for _ in range(5):
        change_password(stack, browser, holder.account, "Wrong-pass-1")
        assert "帳戶名稱或密碼不正確" in browser.find_element(By.ID, "form-alert").text
    change_password(stack, browser, holder.account, holder.password)
    assert browser.find_element(By.ID, "form-alert").text == LOCKED_ZH
    assert browser.find_element(By.ID, "field-account").get_attribute("value") == holder.account
    assert browser.find_element(By.ID, "field-current_password").get_attribute("value") == ""
    check_accessibility(browser)
    screenshot(browser, "password-locked")


def test_a_holder_signs_in_with_the_account_and_otp(stack, browser):
    holder = stack.new_holder(prefix="web-sign-in")
    browser.get(stack.url("/holder"))  # not signed in: sent to the sign-in page, and back after
    wait_until(browser, lambda b: "/sign-in" in b.current_url)
    check_accessibility(browser)
    screenshot(browser, "sign-in")
    type_into(browser, "account", holder.account)
    type_into(browser, "password", holder.password)
    type_into(browser, "otp", holder.otp())
    type_into(browser, "captcha", captcha_answer(stack, browser))
    submit(browser)
    assert browser.current_url == stack.url("/holder")
    session = stack.web_session(browser)
    password_set = int(stack.core.holder_standing(holder.account).password_changed_at.timestamp())
    assert (session["kind"], session["subject"], session["data"]) == (
        "holder", holder.account, {"via": "account", "password_set": password_set})


def test_a_holder_signs_in_with_the_notice_link_and_an_e_mail_code(stack, browser):
    holder = stack.new_holder(prefix="web-notice")
    renewal = stack.open_renewal(holder)
    browser.get(renewal.link)
    assert browser.current_url == stack.url("/notice")  # the token left the address bar at once
    assert "k***@example.mo" in browser.find_element(By.TAG_NAME, "main").text
    check_accessibility(browser)
    screenshot(browser, "notice")

    seen = stack.mails_seen()
    submit(browser, "send")
    code = stack.email_code(holder.emails[0], seen, "Sign-in code")
    check_accessibility(browser)
    screenshot(browser, "notice-code")
    type_into(browser, "code", code)
    submit(browser, "verify")
    assert browser.current_url == stack.url(f"/holder/renewals/{renewal.id}")
    session = stack.web_session(browser)
    assert (session["kind"], session["data"]) == ("holder", {"via": "notice", "renewals": [renewal.id]})

    browser.get(renewal.link)  # the link is spent
    assert browser.find_element(By.TAG_NAME, "h1").text == "此連結無效"
    check_accessibility(browser)
    browser.find_element(By.CSS_SELECTOR, "main a[href='/notice/new-link']").click()
    wait_until(browser, lambda b: b.current_url == stack.url("/notice/new-link"))
    check_accessibility(browser)
