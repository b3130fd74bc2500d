"""CertificateClient over the core's pages: list_certificates gathers every page, certificates
yields them as they come, list_certificate_page reads one; each of them of one status when asked."""

from __future__ import annotations

import pytest

from signserver.client import CertificatePage, InvalidArgument
from tests.ca.conftest import ca_clock, ca_service  # noqa: F401 (fixtures)
from tests.ca.test_certificate_pages import ACCOUNT, OTHER, expected, stored  # noqa: F401 (a fixture)
from tests.ca.test_certificate_service import served  # noqa: F401 (a fixture)
from tests.client.test_certificate_client import client_for


@pytest.fixture(scope="module")
def ra(served, stored, ca_clock):  # noqa: F811
    with client_for(served, stored, "ra-client-pages", clock=ca_clock) as client:
        yield client


def test_list_certificates_gathers_every_page(ra, stored):  # noqa: F811
    assert [c.serial for c in ra.list_certificates(ACCOUNT)] == expected(stored, ACCOUNT)
    assert len(expected(stored, ACCOUNT)) == 300
    assert [c.serial for c in ra.list_certificates()] == expected(stored)
    assert [c.serial for c in ra.list_certificates(expiring_within_days=10)] == expected(stored, None, 10)


def test_list_certificates_of_several_accounts_in_one_listing(ra, stored):  # noqa: F811
    both = set(expected(stored, ACCOUNT)) | set(expected(stored, OTHER))
    listed = ra.list_certificates(accounts=[ACCOUNT, OTHER, "nobody-has-this-name"])
    assert [c.serial for c in listed] == [serial for serial in expected(stored) if serial in both]
    assert {c.account for c in listed} == {ACCOUNT, OTHER} and len(listed) == 500
    with pytest.raises(InvalidArgument):
        ra.list_certificates(ACCOUNT, accounts=[OTHER])


def test_certificates_yields_the_pages_as_they_come(ra, stored):  # noqa: F811
    pages = list(ra.certificate_pages(OTHER, page_size=60))
    assert [len(p) for p in pages] == [60, 60, 60, 20]
    assert [c.serial for p in pages for c in p] == expected(stored, OTHER)


def test_one_page_and_the_next(ra, stored):  # noqa: F811
    first = ra.list_certificate_page(ACCOUNT, page_size=120)
    assert isinstance(first, CertificatePage) and len(first.certificates) == 120 and first.next_page_token
    second = ra.list_certificate_page(ACCOUNT, page_size=1000, page_token=first.next_page_token)
    assert [c.serial for c in first.certificates + second.certificates] == expected(stored, ACCOUNT)
    assert second.next_page_token == ""
    with pytest.raises(InvalidArgument):
        ra.list_certificate_page(OTHER, page_token=first.next_page_token)


def test_the_certificates_of_a_status(ra, stored):  # noqa: F811
    assert [c.serial for c in ra.list_certificates(status="expired")] == expected(stored, status="expired")
    pages = list(ra.certificate_pages(ACCOUNT, status="revoked", page_size=20))
    assert [len(p) for p in pages] == [20, 10] and {c.status for p in pages for c in p} == {"revoked"}
    first = ra.list_certificate_page(status="revoked", page_size=50)
    with pytest.raises(InvalidArgument):
        ra.list_certificate_page(status="valid", page_token=first.next_page_token)
    with pytest.raises(InvalidArgument):
        ra.list_certificate_page(status="active")
