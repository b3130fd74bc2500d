"""The e-mails the RA could not send, on the operators' dashboard, in a real headless Chromium
(the harness of tests/browser) against a running `signserver ra serve` whose SMTP server refuses
one domain for good (550) and keeps another waiting (451): how many wait, since when, how many were
given up, and for each given up its recipient and why, in every language, and never the secret a
message carried (the notice's access key)."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import sqlalchemy
from selenium.webdriver.common.by import By

from signserver.clock import SystemClock
from signserver.ra.operator_accounts import OperatorAccounts
from signserver.ra.settings import load_settings
from signserver.ra.store.database import RaDatabase
from signserver.ra.store.schema import outbox

from tests.browser.conftest import (_chromiums, browser, browser_in, ca_clock, check_accessibility,  # noqa: F401
                                    press_and_wait, screenshot, stack, wait_until)
from tests.browser.test_operator_pages import sign_in
from tests.conftest import smtp_on_loopback
from tests.ra.running import TOKENS, Inbox
from tests.ra.running import core, eid, ra_files  # noqa: F401 (fixtures)
from tests.ra.web.test_operator_pages import OPERATOR_PASSWORD, Page, holder_session, new_operator, text_of

pytestmark = pytest.mark.browser

GONE = "gone@refused.example.mo"  # the SMTP server refuses it for good: the message is given up
BUSY = "busy@later.example.mo"  # the SMTP server asks to try again later: the message waits


class RefusingInbox(Inbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example.mo"):
            return "550 5.1.1 mailbox unavailable"
        if address.endswith("@later.example.mo"):
            return "451 4.2.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture(scope="module")
def inbox():
    handler = RefusingInbox()
    controller = smtp_on_loopback(handler)
    handler.port = controller.port
    yield handler
    controller.stop()


def outbox_settled(stack, timeout: float = 60) -> list[dict]:
    """`signserver ra outbox` once the message to GONE is given up and the one to BUSY was tried."""
    deadline = time.monotonic() + timeout
    while True:
        listed = stack.command("outbox")
        if any(m["recipient"] == GONE and m["given_up_at"] for m in listed) and \
                any(m["recipient"] == BUSY and m["attempts"] for m in listed):
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)


def test_the_dashboard_shows_the_mail_that_waits_and_the_mail_given_up(stack, browser, browser_in):
    holder = stack.new_holder(prefix="web-outbox", emails=("kuan@example.mo", GONE, BUSY))
    renewal = stack.open_renewal(holder)
    token = TOKENS[renewal.id]
    outbox_settled(stack)

    sign_in(stack, browser)
    panel = browser.find_element(By.ID, "outbox").find_element(By.XPATH, "..")
    text = panel.text
    assert browser.find_element(By.ID, "outbox").text == "未能寄出的電郵"
    assert "等候寄出：1" in text and "已放棄：1" in text and "最早一封排入於" in text
    assert GONE in text and "550 5.1.1 mailbox unavailable" in text
    assert token not in browser.page_source and "/notice/" not in browser.page_source
    check_accessibility(browser)
    screenshot(browser, "operator-dashboard-outbox")

    for languages, heading, waiting, given_up in (("pt", "E-mails por enviar", "À espera: 1", "Abandonados: 1"),
                                                  ("en-US,en", "E-mail not sent", "Waiting: 1", "Given up: 1")):
        other = browser_in(languages)
        sign_in(stack, other)
        assert other.find_element(By.ID, "outbox").text == heading
        shown = other.find_element(By.ID, "outbox").find_element(By.XPATH, "..").text
        assert waiting in shown and given_up in shown and GONE in shown
        assert token not in other.page_source


# --- dealing with an e-mail given up ----------------------------------------------------------

def given_up_row(panel, recipient: str):
    """The row of the table of e-mails given up that names ``recipient``, or None."""
    rows = panel.find_elements(By.XPATH, f".//tr[td[normalize-space()='{recipient}']]")
    return rows[0] if rows else None


def outbox_panel(browser):
    return browser.find_element(By.ID, "outbox").find_element(By.XPATH, "..")


def wait_given_up(stack, recipient: str, timeout: float = 60) -> dict:
    """The entry of `signserver ra outbox` for the message to ``recipient``, once given up."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in stack.command("outbox") if m["recipient"] == recipient and m["given_up_at"]]
        if found:
            return found[0]
        assert time.monotonic() < deadline, stack.command("outbox")
        time.sleep(0.2)


def queue_given_up_without_renewal(stack, recipient: str) -> None:
    """A message given up before the outbox recorded which renewal a message is for (an older RA)."""
    now = int(time.time())
    with stack._database.begin() as conn:
        conn.execute(sqlalchemy.insert(outbox).values(created_at=now - 60, recipient=recipient, subject="Old notice",
                                                      body="", attempts=1, next_attempt_at=now - 60,
                                                      last_error="550 5.1.1 gone", given_up_at=now - 30))


def test_an_operator_reaches_the_holder_of_a_given_up_e_mail_and_marks_it_dealt_with(stack, browser, browser_in):
    gone = f"gone-{uuid.uuid4().hex[:8]}@refused.example.mo"
    holder = stack.new_holder(prefix="web-dismiss", emails=("kuan@example.mo", gone))
    renewal = stack.open_renewal(holder)
    token = TOKENS[renewal.id]
    listed = wait_given_up(stack, gone)
    assert listed["renewal_id"] == renewal.id and listed["account"] == holder.account
    old = f"old-{uuid.uuid4().hex[:8]}@refused.example.mo"
    queue_given_up_without_renewal(stack, old)

    operator = sign_in(stack, browser)
    panel = outbox_panel(browser)
    before = panel.text
    row = given_up_row(panel, gone)
    assert row is not None, before
    link = row.find_element(By.CSS_SELECTOR, "a[href^='/operator/holders/']")
    assert link.get_attribute("href") == stack.url(f"/operator/holders/{holder.account}")
    assert link.text == holder.account
    assert "標記為已處理" in row.text
    assert not given_up_row(panel, old).find_elements(By.TAG_NAME, "a")  # nothing tells whose it was
    assert token not in browser.page_source and "/notice/" not in browser.page_source
    check_accessibility(browser)
    screenshot(browser, "operator-dashboard-outbox-given-up")

    for languages, button in (("pt", "Marcar como tratado"), ("en-US,en", "Mark as dealt with")):
        other = browser_in(languages)
        sign_in(stack, other)
        shown = given_up_row(outbox_panel(other), gone)
        assert button in shown.text and holder.account in shown.text
        assert token not in other.page_source

    press_and_wait(browser, link)  # the holder's page, with the renewal the e-mail was for
    assert browser.current_url == stack.url(f"/operator/holders/{holder.account}")
    assert holder.serial in browser.find_element(By.TAG_NAME, "main").text

    browser.get(stack.url("/operator"))
    given_up_before = int(re.search(r"已放棄：(\d+)", outbox_panel(browser).text).group(1))
    press_and_wait(browser, given_up_row(outbox_panel(browser), gone).find_element(By.CSS_SELECTOR,
                                                                                   "button[type=submit]"))
    assert browser.current_url == stack.url("/operator")
    assert f"寄往 {gone} 的電郵已標記為已處理" in browser.find_element(By.CSS_SELECTOR, ".flash--success").text
    panel = outbox_panel(browser)
    assert given_up_row(panel, gone) is None and given_up_row(panel, old) is not None
    assert f"已放棄：{given_up_before - 1}" in panel.text and "標記為已處理：" in panel.text
    assert token not in browser.page_source

    [entry] = [e for e in stack.command("audit")["entries"] if e["action"] == "email_dismissed"
               and f"email={listed['id']}" in e["detail"]]
    assert entry["actor"] == operator.name and entry["renewal_id"] == renewal.id and gone in entry["detail"]
    [after] = [m for m in stack.command("outbox") if m["id"] == listed["id"]]
    assert after["dismissed_by"] == operator.name and after["dismissed_at"]

    # The same form sent again (a second tab, a reload) is refused in the operator's language.
    browser.execute_script(
        "const form = document.querySelector('main form[action$=\"/dismiss\"]');"
        "form.action = arguments[0]; form.submit();", f"/operator/outbox/{listed['id']}/dismiss")
    wait_until(browser, lambda b: "已標記為已處理" in b.find_element(By.CSS_SELECTOR, ".flash--error").text)


def test_a_dismissal_without_the_csrf_token_is_refused_and_changes_nothing(stack, browser):
    gone = f"gone-{uuid.uuid4().hex[:8]}@refused.example.mo"
    holder = stack.new_holder(prefix="web-csrf", emails=("kuan@example.mo", gone))
    stack.open_renewal(holder)
    listed = wait_given_up(stack, gone)
    sign_in(stack, browser)
    row = given_up_row(outbox_panel(browser), gone)
    browser.execute_script("arguments[0].querySelector('input[name=csrf_token]').remove()", row)
    press_and_wait(browser, row.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "此表格已失效或並非來自本網站" in browser.find_element(By.TAG_NAME, "main").text
    browser.get(stack.url("/operator"))
    assert given_up_row(outbox_panel(browser), gone) is not None
    [still] = [m for m in stack.command("outbox") if m["id"] == listed["id"]]
    assert still["dismissed_at"] is None


def test_only_a_signed_in_operator_in_good_standing_may_dismiss(stack):
    gone = f"gone-{uuid.uuid4().hex[:8]}@refused.example.mo"
    holder = stack.new_holder(prefix="web-role", emails=("kuan@example.mo", gone))
    stack.open_renewal(holder)
    listed = wait_given_up(stack, gone)
    path = f"/operator/outbox/{listed['id']}/dismiss"
    settings = load_settings(stack.ra.config)
    database = RaDatabase(settings.database)
    try:
        with Page(stack.ra_url) as anonymous:  # nobody signed in: its own CSRF token, no role
            anonymous.get("/")
            refused = anonymous.post(path)
            assert refused.status_code == 303 and refused.headers["location"].startswith("/operator/sign-in")
        with Page(stack.ra_url) as holder_page:  # a holder signed in
            holder_page.cookie = holder_session(settings, database, stack.core)
            assert holder_page.get("/holder").status_code == 200  # a holder's session that stands
            refused = holder_page.post(path)
            assert refused.status_code == 303 and refused.headers["location"].startswith("/operator/sign-in")
        operators = OperatorAccounts.from_settings(settings, database, SystemClock())
        with Page(stack.ra_url) as page:  # an operator since disabled
            name, totp = new_operator(operators)
            page.get("/operator/sign-in")
            assert page.post("/operator/sign-in", {"name": name, "password": OPERATOR_PASSWORD,
                                                   "otp": totp.now()}).status_code == 303
            page.get("/operator")
            assert page.post(path, csrf=False).status_code == 403  # without the token
            stack.command("operator", "disable", name)
            refused = page.post(path)
            assert refused.status_code == 303 and refused.headers["location"].startswith("/operator/sign-in")
        [still] = [m for m in stack.command("outbox") if m["id"] == listed["id"]]
        assert still["dismissed_at"] is None
        assert not [e for e in stack.command("audit")["entries"] if e["action"] == "email_dismissed"
                    and f"email={listed['id']}" in e["detail"]]

        with Page(stack.ra_url) as page:  # a number no message has, however large: refused on the dashboard
            name, totp = new_operator(operators)
            page.get("/operator/sign-in")
            page.post("/operator/sign-in", {"name": name, "password": OPERATOR_PASSWORD, "otp": totp.now()})
            page.get("/operator")
            for number in ("0", "99999999", "9" * 40):
                answer = page.post(f"/operator/outbox/{number}/dismiss")
                assert answer.status_code == 303, answer.text[:500]
                assert "There is no e-mail given up" in text_of(page.get("/operator"))
    finally:
        database.close()
