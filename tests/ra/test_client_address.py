"""The address the RA's rate limits count is the connecting client's: `signserver ra serve` (on
loopback, as by default) does not take an X-Forwarded-For header for it, not even from loopback,
where a TLS terminator on the same host would pass a client's header through."""

from __future__ import annotations

from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.ra.web.test_account_pages import Visitor


def attempt(visitor: Visitor, forwarded_for: str | None = None) -> int:
    """A password change with a wrong captcha (the form counts the attempt before the captcha)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return visitor.request("POST", "/password", headers=headers,
                           data={"csrf_token": visitor.csrf, "account": "xff-nobody", "captcha": "WRONG"}).status_code


def test_a_forwarded_for_header_from_loopback_does_not_change_the_counted_address(ra_process):
    limit = 20  # ra.web_attempts_per_address, by default
    visitor = Visitor(ra_process)
    visitor.address = "127.0.0.1"  # the address uvicorn trusts proxy headers from, by default
    assert visitor.get("/password").status_code == 200 and visitor.csrf
    statuses = [attempt(visitor, f"203.0.113.{n}") for n in range(1, limit + 1)]
    assert statuses == [400] * limit
    assert attempt(visitor, "198.51.100.7") == 429  # a new "address" each time gains nothing
    assert attempt(visitor) == 429

    elsewhere = Visitor(ra_process)  # another real address is counted on its own
    elsewhere.address = "127.0.0.3"
    assert elsewhere.get("/password").status_code == 200
    assert attempt(elsewhere) == 400
