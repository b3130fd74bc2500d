"""The operators' pages in a real Chromium against the running stack: an operator signs in with an
operator account and its one-time password, confirms a renewal from the dashboard, enrols a holder
(the OTP key's QR code and the recovery code shown once), searches holders, completes a renewal
of the in-person queue with the CSR of the holder's card, and goes through the pages of the
certificates listed. Each page passes the accessibility check; screenshots go to
out/screenshots/operator-*.png."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from signserver.ra.web.listing_pages import PAGE_SIZE

from tests.browser.conftest import check_accessibility, press_and_wait, screenshot, wait_until
from tests.ra.conftest import KUAN
from tests.ra.running import card_csr, create_account, issue
from tests.ra.test_cli_operations import awaiting_in_person

# What Chromium shows of the RA's pages does not depend on the store: the pages' behaviour on
# each store is tested over HTTP (tests/ra/web), on both.
pytestmark = pytest.mark.one_store

HOLDER_PASSWORD = "First-pass-1"


def fill(browser, values: dict[str, str]) -> None:
    for name, value in values.items():
        field = browser.find_element(By.ID, f"field-{name}")
        field.clear()
        field.send_keys(value)


def submit(browser, form: str = "main form") -> None:
    """Press the submit button of the (first) form matching ``form`` and wait for the next page."""
    press_and_wait(browser, browser.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]"))


def sign_in(stack, browser, then: str = "/operator"):
    """A new operator signs in through the sign-in page (asked for by ``then``, an operator page)."""
    operator = stack.new_operator()
    browser.get(stack.url(then))
    assert "/operator/sign-in" in browser.current_url
    fill(browser, {"name": operator.name, "password": operator.password, "otp": operator.otp()})
    submit(browser)
    assert browser.current_url == stack.url(then), browser.find_element(By.TAG_NAME, "main").text
    return operator


def test_an_operator_signs_in_with_the_one_time_password_and_confirms_a_renewal(stack, browser):
    holder = stack.new_holder()
    operator = stack.new_operator()
    browser.get(stack.url("/operator"))
    assert browser.current_url.startswith(stack.url("/operator/sign-in"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "操作員登入"
    check_accessibility(browser)
    screenshot(browser, "operator-sign-in")

    fill(browser, {"name": operator.name, "password": "Wrong-pass-9", "otp": operator.otp()})
    submit(browser)
    assert "不正確" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    fill(browser, {"name": operator.name, "password": operator.password, "otp": operator.otp()})
    submit(browser)
    assert browser.current_url == stack.url("/operator")
    assert browser.find_element(By.TAG_NAME, "h1").text == "操作員工作台"
    assert operator.name in browser.find_element(By.CLASS_NAME, "signed-in-as").text

    seen = stack.mails_seen()
    submit(browser, f"form[action='/operator/renewals/confirm']:has(input[value='{holder.serial}'])")
    assert holder.serial in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    stack.inbox.wait_for(holder.emails[0], "Certificate renewal notice", seen)
    [renewal] = stack.command("renewals", "--account", holder.account)
    assert renewal["confirmed_by"] == operator.name and renewal["state"] == "awaiting_identity"
    under_way = browser.find_element(By.ID, "under-way").find_element(By.XPATH, "..").text
    assert holder.serial in under_way
    check_accessibility(browser)
    screenshot(browser, "operator-dashboard")


def test_an_operator_enrols_a_holder_and_sees_the_secrets_once(stack, browser):
    sign_in(stack, browser, "/operator/enrol")
    check_accessibility(browser)
    screenshot(browser, "operator-enrol")
    account = f"web-enrol-{uuid.uuid4().hex[:8]}"
    fill(browser, {"account": account, "name": KUAN.name, "id_type": KUAN.id_type, "id_number": KUAN.id_number,
                   "emails": " ".join(KUAN.emails), "organisation": "DSAJ", "department": "Legal",
                   "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD})
    browser.execute_script("document.getElementById('field-birth_date').value = arguments[0]",
                           KUAN.birth_date.isoformat())  # a date input's typing depends on the locale
    submit(browser, "form[action='/operator/enrol']")

    assert browser.find_element(By.TAG_NAME, "h1").text == "持有人已登記"
    [certificate] = stack.core.list_certificates(account)
    assert browser.find_element(By.ID, "enrolled-serial").text == certificate.serial
    qr = browser.find_element(By.CSS_SELECTOR, "figure img")
    assert qr.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", qr)
    assert browser.find_element(By.ID, "recovery-code").text
    check_accessibility(browser)
    screenshot(browser, "operator-enrolled")


def test_an_operator_searches_holders_and_opens_one(stack, browser):
    holder = stack.new_holder()
    sign_in(stack, browser, "/operator/search")
    fill(browser, {"q": holder.account})
    submit(browser, "form[aria-labelledby=search-holders]")
    results = browser.find_element(By.ID, "holders-found").find_element(By.XPATH, "..")
    assert holder.account in results.text and holder.serial in results.text
    check_accessibility(browser)
    screenshot(browser, "operator-search")
    results.find_element(By.LINK_TEXT, holder.account).click()
    wait_until(browser, EC.url_contains(f"/operator/holders/{holder.account}"))
    assert holder.serial in browser.find_element(By.TAG_NAME, "main").text
    check_accessibility(browser)


def test_an_operator_completes_a_renewal_of_the_in_person_queue(stack, browser, tmp_path):
    holder = stack.new_holder("qualified-government")
    renewal = awaiting_in_person(stack.ra.config, replace(KUAN, account=holder.account), holder.serial,
                                 holder.certificate.not_after.isoformat())
    sign_in(stack, browser)
    queue = browser.find_element(By.ID, "in-person").find_element(By.XPATH, "..")
    queue.find_element(By.CSS_SELECTOR, f"a[href='/operator/renewals/{renewal.id}/in-person']").click()
    wait_until(browser, EC.url_contains(f"/operator/renewals/{renewal.id}/in-person"))
    assert holder.serial in browser.find_element(By.TAG_NAME, "main").text
    check_accessibility(browser)
    screenshot(browser, "operator-in-person")

    csr = tmp_path / "card.csr"
    csr.write_bytes(card_csr())
    browser.find_element(By.ID, "field-csr").send_keys(str(csr))
    submit(browser, f"form[action='/operator/renewals/{renewal.id}/in-person']")
    new_serial = browser.find_element(By.ID, "new-serial").text
    [new] = [c for c in stack.core.list_certificates(holder.account) if c.predecessor_serial == holder.serial]
    assert new_serial == new.serial
    check_accessibility(browser)


def test_the_unlock_and_revocation_forms_and_their_refusals_are_accessible(stack, browser):
    holder = stack.new_holder()
    sign_in(stack, browser, "/operator/unlock")
    check_accessibility(browser)
    fill(browser, {"account": holder.account, "recovery_code": "WRONG-CODE-0000", "new_password": "Second-pass-2",
                   "confirmation": "Second-pass-2"})
    submit(browser, "form[action='/operator/unlock']")
    assert browser.find_element(By.CSS_SELECTOR, "main [role=alert]").text
    check_accessibility(browser)

    browser.get(stack.url(f"/operator/revoke?serial={holder.serial}"))
    assert browser.find_element(By.ID, "field-serial").get_attribute("value") == holder.serial
    check_accessibility(browser)
    submit(browser, "form[action='/operator/revoke']")  # not confirmed
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    summary.find_element(By.CSS_SELECTOR, "a[href='#field-confirmed']").click()
    assert browser.switch_to.active_element.get_attribute("id") == "field-confirmed"
    check_accessibility(browser)
    browser.find_element(By.ID, "field-confirmed").click()
    submit(browser, "form[action='/operator/revoke']")
    assert holder.serial in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    assert stack.core.list_certificates(holder.account)[0].status == "revoked"


def test_the_certificates_listed_are_shown_a_page_at_a_time(stack, browser):
    """More valid certificates than a page holds: the search's listing and the dashboard's
    certificates due link to their next page, and from it back to the first."""
    for _ in range(PAGE_SIZE + 1):
        account = f"web-paged-{uuid.uuid4().hex[:8]}"
        create_account(stack.core, account)
        issue(stack.core, account, "cloud-signature-government")
    sign_in(stack, browser, "/operator/search")
    Select(browser.find_element(By.ID, "field-status")).select_by_value("valid")
    submit(browser, "form[aria-labelledby=search-certificates]")
    found = browser.find_element(By.ID, "certificates-found").find_element(By.XPATH, "..")
    assert len(found.find_elements(By.CSS_SELECTOR, "td.serial")) == PAGE_SIZE
    check_accessibility(browser)
    screenshot(browser, "operator-certificates-page")
    found.find_element(By.CSS_SELECTOR, "nav.pager a[rel=next]").click()
    wait_until(browser, EC.url_contains("page="))
    pager = browser.find_element(By.CSS_SELECTOR, "nav.pager")
    assert pager.find_element(By.LINK_TEXT, "第一頁").get_attribute("href") == \
        stack.url("/operator/search?account=&status=valid&expiring=")
    check_accessibility(browser)

    browser.get(stack.url("/operator"))
    due = browser.find_element(By.ID, "to-confirm").find_element(By.XPATH, "..")
    due.find_element(By.LINK_TEXT, "更多需續期的證書").click()
    wait_until(browser, EC.url_contains("page="))
    assert browser.find_element(By.LINK_TEXT, "返回首批需續期的證書")
    check_accessibility(browser)
