"""The operators' listings of the core's certificates at a national scale, on a running `signserver
ra serve` driven over HTTP (a real served core, the RA's own database): the search's listing of
every account's certificates shows one page of the core's at a time, with a link to the next that
keeps the filters, never the whole listing."""

from __future__ import annotations

import html
import re
import secrets
from urllib.parse import parse_qs, urlparse

import pytest

from tests.ra.running import create_account, issue
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.ra.web.test_operator_pages import database, operator, operators, settings, text_of  # noqa: F401

# More certificates than any page of the operators' shows (the core's pages hold 100 by default).
CERTIFICATES = 120
MOST_ON_A_PAGE = 100
VALID = "/operator/search?account=&status=valid&expiring="


@pytest.fixture(scope="module")
def many_certificates(core) -> list[str]:
    """The serials of CERTIFICATES holders' valid certificates, each of an account of its own."""
    prefix = f"many-{secrets.token_hex(2)}"
    serials = []
    for number in range(CERTIFICATES):
        account = f"{prefix}-{number:03d}"
        create_account(core, account)
        serials.append(issue(core, account, "cloud-signature-government").serial)
    return serials


def listed_serials(response) -> list[str]:
    """The serial numbers of the certificate rows of a search page."""
    return re.findall(r'<td class="serial">([0-9a-f]+)</td>', response.text)


def next_link(response) -> str:
    """The page's link to the next page of its listing ("" when there is none)."""
    found = re.search(r'<a href="([^"]+)" rel="next"', response.text)
    return html.unescape(found.group(1)) if found else ""


def walk(page, path: str, rows) -> tuple[list[list[str]], list[str]]:
    """Every page of a listing from ``path`` on, following its next links: the rows of each page
    (``rows`` reads them) and the links followed."""
    pages, links = [], []
    while path:
        shown = page.get(path)
        assert shown.status_code == 200, text_of(shown)[:500]
        pages.append(rows(shown))
        path = next_link(shown)
        if path:
            links.append(path)
        assert len(pages) <= 100, "the next links go round"
    return pages, links


def test_the_certificates_of_every_account_are_listed_a_page_at_a_time(operator, many_certificates, core):
    page, _ = operator
    revoked = many_certificates[7]
    core.revoke_certificate(revoked, "superseded")

    pages, links = walk(page, VALID, listed_serials)
    assert len(pages) > 1 and all(len(rows) <= MOST_ON_A_PAGE for rows in pages), [len(r) for r in pages]
    listed = [serial for rows in pages for serial in rows]
    assert len(listed) == len(set(listed))  # no certificate twice
    assert set(many_certificates) - {revoked} <= set(listed) and revoked not in listed  # the status kept
    for link in links:  # each next page keeps the filters and carries the core's page token
        query = parse_qs(urlparse(link).query, keep_blank_values=True)
        assert urlparse(link).path == "/operator/search"
        assert query["status"] == ["valid"] and query["account"] == [""] and query["expiring"] == [""]
        assert query["page"][0]

    first = page.get(VALID)  # counted as what it is: a page, not the listing
    assert f"{len(listed_serials(first))} certificates on this page" in text_of(first)
    later = page.get(links[0])  # and back to the first: the core's tokens go forward only
    assert re.search(r'<a href="/operator/search\?account=&amp;status=valid&amp;expiring=">First page</a>',
                     later.text), later.text


def test_a_page_link_changed_or_used_with_other_filters_is_refused_on_the_page(operator, many_certificates):
    page, _ = operator
    link = next_link(page.get(VALID))
    token = parse_qs(urlparse(link).query)["page"][0]
    for changed in (link.replace(token, token[:-4] + "AAAA"), link.replace("status=valid", "status=expired"),
                    link.replace(token, "%00" + token), link.replace(token, "x" * 5000)):
        refused = page.get(changed)
        assert refused.status_code == 400, (changed, refused.status_code, text_of(refused)[:300])
        assert "List the certificates again from the first page" in text_of(refused)
        assert not listed_serials(refused)
