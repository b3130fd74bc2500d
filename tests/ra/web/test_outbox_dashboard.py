"""The e-mails the RA could not send, on the operators' dashboard, in a real headless Chromium
(the harness of tests/browser) against a running `signserver ra serve` whose SMTP server refuses
one domain for good (550) and keeps another waiting (451): how many wait, since when, how many were
given up, and for each given up its recipient and why, in every language, and never the secret a
message carried (the notice's access key)."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import (_chromiums, browser, browser_in, ca_clock, check_accessibility,  # noqa: F401
                                    screenshot, stack)
from tests.browser.test_operator_pages import sign_in
from tests.conftest import smtp_on_loopback
from tests.ra.running import TOKENS, Inbox
from tests.ra.running import core, eid, ra_files  # noqa: F401 (fixtures)

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
