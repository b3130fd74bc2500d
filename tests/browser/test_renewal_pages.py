"""The holder's pages in a real Chromium (Traditional Chinese, the default) against the running
stack: a cloud-signature renewal from the holder's home to its new certificate (the e-mail codes
read from the inbox, a sample photo chosen and previewed, the application signed with the
password and an OTP, the activation's progress followed until its outcome), and a certificate
revoked with its revocation phrase. Every page passes the accessibility check and is kept as a
screenshot."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from signserver.registry_dev.server import SAMPLE_FIXTURES
from tests.browser.conftest import captcha_answer, check_accessibility, press_and_wait, screenshot, wait_until

# What Chromium shows of the RA's pages does not depend on the store: the pages' behaviour on
# each store is tested over HTTP (tests/ra/web), on both.
pytestmark = pytest.mark.one_store

PHOTO = SAMPLE_FIXTURES.parent / "photos" / "kuan-weng-sam.png"
OLD_PHRASE = "OldPhrase2024"  # the revocation phrase tests/ra/running.py's create_account sets
NEW_PHRASE = "NewPhrase2027"


def css(browser, selector: str):
    return browser.find_element(By.CSS_SELECTOR, selector)


def submit(browser, form: str) -> None:
    """Press the submit button of the form matched by ``form`` and wait for the next page."""
    press_and_wait(browser, css(browser, f"{form} button[type=submit]"))


def at(browser, path_end: str) -> None:
    wait_until(browser, lambda b: b.current_url.split("?")[0].split("#")[0].endswith(path_end),
               message=f"not at {path_end}: {browser.current_url}")


def sign_in(stack, browser, holder) -> None:
    """The holder signs in with the cloud-signature account (password, OTP, captcha)."""
    browser.get(stack.url("/sign-in?next=/holder"))
    css(browser, "#field-account").send_keys(holder.account)
    css(browser, "#field-password").send_keys(holder.password)
    css(browser, "#field-otp").send_keys(holder.otp())
    css(browser, "#field-captcha").send_keys(captcha_answer(stack, browser))
    submit(browser, 'form[action="/sign-in"]')
    at(browser, "/holder")


def step_page(browser, name: str) -> None:
    check_accessibility(browser)
    screenshot(browser, name)


def test_a_cloud_signature_renewal_in_the_browser(stack, browser):
    holder = stack.new_holder()
    renewal = stack.open_renewal(holder)
    base = f"/holder/renewals/{renewal.id}"
    sign_in(stack, browser, holder)

    assert holder.serial in css(browser, "main").text
    step_page(browser, "holder-home")
    css(browser, f'a[href="{base}"]').click()
    at(browser, base)

    # Consent
    step_page(browser, "renewal-consent")
    css(browser, "#field-consent").click()
    submit(browser, f'form[action="{base}/consent"]')

    # E-mail codes, one address after the other
    for index, address in enumerate(holder.emails):
        seen = stack.mails_seen()
        submit(browser, f"#code-{index} form[action='{base}/codes']")
        code = stack.email_code(address, seen)
        countdown = css(browser, f"#code-{index} .countdown")
        wait_until(browser, lambda b: countdown.is_displayed() and int(countdown.find_element(
            By.CSS_SELECTOR, ".seconds").text) <= 300)
        if index == 0:
            step_page(browser, "renewal-email")
        css(browser, f"#field-code-{index}").send_keys(code)
        submit(browser, f"#code-{index} form[action='{base}/codes/verify']")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".addresses .status-valid")) == len(holder.emails)
    submit(browser, f'form[action="{base}/registry"]')

    # The photo: chosen, previewed, used
    css(browser, "#field-photo").send_keys(str(PHOTO))
    preview = css(browser, ".preview img")
    wait_until(browser, lambda b: preview.is_displayed() and b.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", preview))
    assert css(browser, ".photo-form .again").is_displayed()
    step_page(browser, "renewal-photo")
    submit(browser, ".photo-form")

    # Review and agreement
    assert "DSAJ" in css(browser, "main").text
    step_page(browser, "renewal-review")
    css(browser, "#field-agree").click()
    submit(browser, f'form[action="{base}/agreement"]')

    # The application, signed with the cloud-signature password and an OTP
    step_page(browser, "renewal-application")
    css(browser, "#field-password").send_keys(holder.password)
    css(browser, "#field-otp").send_keys(holder.otp())
    submit(browser, f'form[action="{base}/application/sign"]')

    # Activation, then its progress until the outcome
    step_page(browser, "renewal-activation")
    css(browser, "#field-password").send_keys(holder.password)
    css(browser, "#field-revocation_phrase").send_keys(NEW_PHRASE)
    css(browser, "#field-revocation_phrase_again").send_keys(NEW_PHRASE)
    submit(browser, f'form[action="{base}/activation"]')
    new_serial = wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".new-serial"), timeout=120)[0].text
    assert new_serial and new_serial != holder.serial
    step_page(browser, "renewal-done")
    [renewed] = [c for c in stack.core.list_certificates(holder.account) if c.predecessor_serial == holder.serial]
    assert renewed.serial == new_serial


def test_a_certificate_revoked_with_its_revocation_phrase(stack, browser):
    holder = stack.new_holder()
    sign_in(stack, browser, holder)
    revoke = f"/holder/certificates/{holder.serial}/revoke"
    css(browser, f'a[href="{revoke}"]').click()
    at(browser, revoke)
    step_page(browser, "certificates-revoke")

    css(browser, "#field-revocation_phrase").send_keys("NotThePhrase1")
    css(browser, "#field-understood").click()
    submit(browser, f'form[action="{revoke}"]')
    assert css(browser, "#field-revocation_phrase").get_attribute("aria-invalid") == "true"
    check_accessibility(browser)
    assert stack.core.get_certificate(holder.serial).status == "valid"

    assert css(browser, "#field-understood").is_selected()  # the box stays as ticked; the phrase is typed again
    assert css(browser, "#field-revocation_phrase").get_attribute("value") == ""
    css(browser, "#field-revocation_phrase").send_keys(OLD_PHRASE)
    submit(browser, f'form[action="{revoke}"]')
    at(browser, "/holder")
    assert stack.core.get_certificate(holder.serial).status == "revoked"
    assert css(browser, ".status-revoked").is_displayed()
    check_accessibility(browser)
