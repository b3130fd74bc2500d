"""The operators' listings of the core's certificates at a national scale, on a running `signserver
ra serve` driven over HTTP (a real served core, the RA's own database): the search's listing of
every account's certificates and the dashboard's certificates due for renewal show one page of the
core's at a time, with a link to the next that keeps the filters, never the whole listing; the
dashboard learns which certificates have a renewal under way from the open renewals alone, never
from the RA's history of finished ones."""

from __future__ import annotations

import datetime
import html
import re
import secrets
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import update

from signserver.ra import renewal as machine
from signserver.ra.store import repository
from signserver.ra.store.schema import renewals
from tests.ra.conftest import KUAN
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
    return re.findall(r'<td class="serial[^"]*">([0-9a-f]+)</td>', response.text)


def due_serials(response) -> list[str]:
    """The serial numbers the dashboard offers to confirm (a button for each)."""
    return re.findall(r'<input type="hidden" name="serial" value="([0-9a-f]+)">', response.text)


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


def test_the_dashboard_lists_one_page_of_the_certificates_due_and_links_the_next(operator, many_certificates):
    page, _ = operator
    pages, links = walk(page, "/operator", due_serials)
    assert len(pages) > 1 and all(len(rows) <= MOST_ON_A_PAGE for rows in pages), [len(r) for r in pages]
    due = [serial for rows in pages for serial in rows]
    assert len(due) == len(set(due)) and set(many_certificates) - {many_certificates[7]} <= set(due)
    assert all(urlparse(link).path == "/operator" and urlparse(link).fragment == "to-confirm" for link in links)
    later = page.get(links[0])
    assert '<a href="/operator#to-confirm">Back to the first certificates due</a>' in later.text

    changed = page.get(links[0].replace("page=", "page=AAAA"))
    assert changed.status_code == 400 and not due_serials(changed)
    assert "Start again from the first page" in text_of(changed)


def test_the_dashboard_reads_open_renewals_only(operator, core, database):
    """A certificate whose renewal is under way is not offered for confirmation, one whose only
    renewal is finished is: and the dashboard learns it without reading a finished renewal. The
    RA's history holds every renewal ever made (a national RA adds hundreds of thousands a year);
    one here that the RA cannot even read (its e-mail addresses are not JSON) stands for it."""
    page, _ = operator
    now = datetime.datetime.now(datetime.timezone.utc)
    certificates = {}
    for kind in ("open", "finished", "none"):
        account = f"board-{kind}-{secrets.token_hex(3)}"
        create_account(core, account)
        certificates[kind] = issue(core, account, "cloud-signature-government")
    with database.transaction() as conn:
        for kind in ("open", "finished"):
            record = certificates[kind]
            holder = machine.Holder(record.account, KUAN.id_type, KUAN.id_number, KUAN.name, KUAN.birth_date,
                                    KUAN.emails)
            repository.save_holder(conn, holder, now)
            opened = machine.open_renewal(uuid.uuid4().hex, serial=record.serial, account=record.account,
                                          profile=record.profile, expires=record.not_after, holder=holder, now=now)
            if kind == "open":
                opened = machine.confirm(opened, "counter", now)
            else:
                opened = machine.refuse(opened, "the holder's data did not match", now)
            repository.insert_renewal(conn, opened)
        unreadable = machine.refuse(machine.open_renewal(
            uuid.uuid4().hex, serial=secrets.token_hex(8), account=f"board-history-{secrets.token_hex(3)}",
            profile="cloud-signature-government", expires=now - datetime.timedelta(days=400), holder=KUAN, now=now),
            "long ago", now)
        repository.insert_renewal(conn, unreadable)
        conn.execute(update(renewals).where(renewals.c.id == unreadable.id).values(emails="not JSON"))
    try:
        pages, _ = walk(page, "/operator", due_serials)
    finally:
        with database.transaction() as conn:
            conn.execute(update(renewals).where(renewals.c.id == unreadable.id).values(emails="[]"))
    due = {serial for rows in pages for serial in rows}
    assert certificates["finished"].serial in due and certificates["none"].serial in due
    assert certificates["open"].serial not in due
