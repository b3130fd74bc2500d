"""CertificateService.ListCertificates in pages: every holder's certificate once, in the order
issued, with the request's filters (the status too, read by the database: pages full of that status
alone), and no certificate of no holder (the CA's own, applications' and RAs'); a page token that is
not the server's, or not for those filters, refused; and a listing of every account that fits
gRPC's default message limit however many there are."""

from __future__ import annotations

import base64
import datetime

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import insert, select

from signserver.ca import repository
from signserver.ca.repository import PagePosition
from signserver.clock import epoch_seconds
from signserver.store.schema import accounts, certificates
from signserver.v1 import certificate_pb2, certificate_pb2_grpc
from tests.ca.conftest import certificates_of
from tests.ca.test_certificate_service import channel_for, client_pair, served  # noqa: F401 (a fixture)
from tests.conftest import enrol

ACCOUNT = "pages-holder-a"
OTHER = "pages-holder-b"
THIRD = "pages-holder-c"


def copies(template: dict, count: int, first: int, account_id, issued_at, not_after) -> list[dict]:
    """``count`` rows like ``template``, numbered from ``first``; their times from the functions given."""
    return [dict(template, serial=f"{i:040x}", account_id=account_id, credential_id=None, predecessor_serial=None,
                 status="valid", issued_at=issued_at(i), not_after=not_after(i)) for i in range(first, first + count)]


@pytest.fixture(scope="module")
def stored(ca_service, ca_clock):
    """1,250 holders' certificate rows: 300 of ACCOUNT (a tenth expiring within 10 days, another
    tenth revoked), 200 of OTHER, 750 of THIRD (one in 25 revoked, one in 25 expired). Ten rows share
    each issue time, so the serial orders them; the rows of the accounts interleave with the others.
    Besides those the CA made for itself, 750 rows of no holder, as applications' and RAs' client
    certificates are, each issue time of THIRD's holding ten of them too (one in 25 revoked, one in
    25 expired, one in 10 expiring within 10 days)."""
    enrol(ca_service, ACCOUNT)
    enrol(ca_service, OTHER)
    enrol(ca_service, THIRD)
    now = epoch_seconds(ca_clock.now())
    with ca_service.database.transaction() as conn:
        template = dict(conn.execute(select(certificates).limit(1)).mappings().first())
        ids = dict(conn.execute(select(accounts.c.username, accounts.c.id)
                                .where(accounts.c.username.in_((ACCOUNT, OTHER, THIRD)))).all())
        year = now + 365 * 86400
        rows = (copies(template, 300, 10_000, ids[ACCOUNT], lambda i: now - 100_000 + i // 10,
                       lambda i: now + 5 * 86400 if i % 10 == 0 else year)
                + copies(template, 200, 20_000, ids[OTHER], lambda i: now - 100_000 + (i - 10_000) // 10,
                         lambda i: year)
                + copies(template, 750, 30_000, ids[THIRD], lambda i: now - 100_000 + (i - 30_000) // 10,
                         lambda i: now - 86400 if i % 25 == 1 else year)
                + copies(template, 750, 40_000, None, lambda i: now - 100_000 + (i - 40_000) // 10,
                         lambda i: now - 86400 if i % 25 == 1 else now + 5 * 86400 if i % 10 == 2 else year))
        for row in rows:
            if (row["account_id"] == ids[ACCOUNT] and int(row["serial"], 16) % 10 == 5
                    or row["account_id"] in (ids[THIRD], None) and int(row["serial"], 16) % 25 == 0):
                row.update(status="revoked", revoked_at=now - 3600, revocation_reason="superseded")
        conn.execute(insert(certificates), rows)
    return ca_service


@pytest.fixture(scope="module")
def stub(served, stored):  # noqa: F811
    _, certificate, key = client_pair(stored, "client-ra", "ra-pages")
    with channel_for(served, certificate, key) as channel:
        yield certificate_pb2_grpc.CertificateServiceStub(channel)


def expected(service, username: str | None = None, expiring_days: int = 0, status: str = "") -> list[str]:
    """The serials an RA's listing names, in its order: by issue time, then serial; holders'
    certificates alone; of ``status`` as each certificate shows it."""
    return [c.serial for c in certificates_of(service, username, expiring_days or None)
            if c.account and (not status or c.status == status)]


def all_pages(stub, **fields) -> list[certificate_pb2.ListCertificatesResponse]:
    pages = [stub.ListCertificates(certificate_pb2.ListCertificatesRequest(**fields), timeout=60)]
    while pages[-1].next_page_token:
        pages.append(stub.ListCertificates(certificate_pb2.ListCertificatesRequest(
            **fields, page_token=pages[-1].next_page_token), timeout=60))
    return pages


def serials(pages) -> list[str]:
    return [c.serial for page in pages for c in page.certificates]


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def violated_fields(error: grpc.RpcError) -> list[str]:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    return []


def test_every_certificate_comes_once_in_pages_of_a_hundred_in_the_order_issued(stub, stored):
    pages = all_pages(stub)
    assert [len(p.certificates) for p in pages[:-1]] == [100] * (len(pages) - 1)
    assert 0 < len(pages[-1].certificates) <= 100 and pages[-1].next_page_token == ""
    assert serials(pages) == expected(stored) and len(set(serials(pages))) == 1250


def test_the_pages_of_one_account_hold_only_its_certificates(stub, stored):
    pages = all_pages(stub, account=ACCOUNT, page_size=7)
    assert {len(p.certificates) for p in pages[:-1]} == {7}
    assert serials(pages) == expected(stored, ACCOUNT) and len(serials(pages)) == 300
    assert {c.account for p in pages for c in p.certificates} == {ACCOUNT}


def test_the_pages_of_certificates_expiring_soon_hold_only_those(stub, stored):
    pages = all_pages(stub, expiring_within_days=10, page_size=4)
    assert serials(pages) == expected(stored, None, 10)
    assert {s for s in serials(pages) if s.startswith("0" * 30)} == \
        {f"{i:040x}" for i in range(10_000, 10_300, 10)}


@pytest.mark.parametrize("status", ["valid", "expired", "revoked"])
def test_the_pages_of_one_status_are_full_of_it_alone(stub, stored, status):
    pages = all_pages(stub, status=status, page_size=7)
    # Full pages but the last: the database keeps the status, not the server after reading the page.
    assert {len(p.certificates) for p in pages[:-1]} <= {7} and pages[-1].next_page_token == ""
    assert serials(pages) == expected(stored, status=status) and len(serials(pages)) >= 30
    assert {c.status for p in pages for c in p.certificates} == {status}


def test_one_status_of_one_account(stub, stored):
    pages = all_pages(stub, account=ACCOUNT, status="revoked", page_size=4)
    assert serials(pages) == expected(stored, ACCOUNT, status="revoked") and len(serials(pages)) == 30
    assert all_pages(stub, account=OTHER, status="revoked")[0].certificates == []
    # Expiring soon means valid: no revoked certificate is among them.
    assert serials(all_pages(stub, expiring_within_days=10, status="valid")) == expected(stored, None, 10)
    assert serials(all_pages(stub, expiring_within_days=10, status="revoked")) == []


def test_a_status_that_is_not_a_certificates_is_refused_naming_the_field(stub):
    for bad in ("Revoked", "active", " valid", "valid,revoked", "x" * 200):
        refused = refusal(lambda: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(status=bad),
                                                        timeout=60))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
        assert violated_fields(refused) == ["status"], bad


def query_plan(conn, query) -> str:
    """How the database would run ``query``. PostgreSQL is told to avoid sorts and reading the
    whole table where it can: what is asked is whether an index gives the page in its order (on
    a table this small, the planner might rightly prefer reading it all)."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return "\n".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    conn.exec_driver_sql("SET LOCAL enable_sort = off")
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))


@pytest.mark.parametrize("holders_only", [False, True], ids=["every", "holders"])
@pytest.mark.parametrize("status, index", [("", "ix_certificates_issued_at_serial"),
                                           ("valid", "ix_certificates_status_issued_at_serial"),
                                           ("expired", "ix_certificates_status_issued_at_serial"),
                                           ("revoked", "ix_certificates_status_issued_at_serial")])
def test_a_later_page_is_read_through_an_index_in_the_listings_order(stored, ca_clock, status, index, holders_only):
    now = ca_clock.now()
    after = PagePosition(epoch_seconds(now) - 50_000, "0" * 40)
    with stored.database.read() as conn:
        plan = query_plan(conn, repository.page_query(now, 100, after, status=status, holders_only=holders_only))
    assert index in plan and "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def test_the_pages_hold_no_certificate_of_no_holder(stub, stored):
    """The CA's own certificates and applications' and RAs' client certificates are left out by the
    database, as an RA revokes holders' certificates only: the pages are full however many of them
    lie between, in every status and in the certificates expiring soon. The CA's operator
    (`signserver ca list`) lists them all."""
    for filters in ({}, {"status": "valid"}, {"status": "expired"}, {"status": "revoked"},
                    {"expiring_within_days": 10}):
        pages = all_pages(stub, page_size=7, **filters)
        assert {len(p.certificates) for p in pages[:-1]} <= {7}, filters
        assert all(c.account for p in pages for c in p.certificates), filters
    everything = [c.serial for page in stored.ca.list_pages() for c in page]
    of_no_holder = {c.serial for c in certificates_of(stored) if not c.account}
    assert {f"{i:040x}" for i in range(40_000, 40_750)} < of_no_holder < set(everything)
    assert {"client-ra", "ocsp-responder", "timestamping", "tls-server"} <= \
        {c.profile for c in certificates_of(stored) if c.serial in of_no_holder}


def test_a_page_exactly_full_at_the_end_is_the_last(stub, stored):
    pages = all_pages(stub, account=OTHER, page_size=100)
    assert [len(p.certificates) for p in pages] == [100, 100] and pages[-1].next_page_token == ""


def test_a_page_size_above_a_thousand_is_a_thousand(stub, stored):
    first = stub.ListCertificates(certificate_pb2.ListCertificatesRequest(page_size=5000), timeout=60)
    assert len(first.certificates) == 1000 and first.next_page_token
    assert [c.serial for c in first.certificates] == expected(stored)[:1000]


def test_a_page_token_that_is_not_the_servers_is_refused_naming_the_field(stub):
    token = stub.ListCertificates(certificate_pb2.ListCertificatesRequest(account=ACCOUNT, page_size=3),
                                  timeout=60).next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in ("not a token", "AAAA", tampered, token[:-2], token + "x" * 600):
        refused = refusal(lambda: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(
            account=ACCOUNT, page_size=3, page_token=bad), timeout=60))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
        assert violated_fields(refused) == ["page_token"], bad


def test_the_pages_of_several_accounts_hold_theirs_in_the_order_issued(stub, stored):
    pages = all_pages(stub, accounts=[OTHER, ACCOUNT, "nobody-has-this-name"], page_size=40)
    assert {len(p.certificates) for p in pages[:-1]} == {40}
    # Both accounts' rows, interleaved by issue time as in the listing of every account.
    theirs = set(expected(stored, ACCOUNT)) | set(expected(stored, OTHER))
    assert serials(pages) == [serial for serial in expected(stored) if serial in theirs]
    assert len(serials(pages)) == 500 and {c.account for p in pages for c in p.certificates} == {ACCOUNT, OTHER}
    # A token is bound to the set of names, not to their order.
    token = pages[0].next_page_token
    again = stub.ListCertificates(certificate_pb2.ListCertificatesRequest(
        accounts=["nobody-has-this-name", ACCOUNT, OTHER], page_size=40, page_token=token), timeout=60)
    assert [c.serial for c in again.certificates] == [c.serial for c in pages[1].certificates]
    for others in ({"accounts": [ACCOUNT]}, {"accounts": [ACCOUNT, OTHER]}, {"account": ACCOUNT}, {}):
        refused = refusal(lambda: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(
            **others, page_token=token), timeout=60))
        assert violated_fields(refused) == ["page_token"], others
    nobody = stub.ListCertificates(certificate_pb2.ListCertificatesRequest(accounts=["nobody-has-this-name"]),
                                   timeout=60)
    assert (list(nobody.certificates), nobody.next_page_token) == ([], "")


@pytest.mark.parametrize("fields", [{"account": ACCOUNT, "accounts": [OTHER]},
                                    {"accounts": [f"name-{i}" for i in range(101)]},
                                    {"accounts": [ACCOUNT, ""]}],
                         ids=["both", "101 names", "an empty name"])
def test_a_set_of_accounts_with_an_account_too_many_or_empty_is_refused_naming_the_field(stub, fields):
    refused = refusal(lambda: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(**fields), timeout=60))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and violated_fields(refused) == ["accounts"]


def test_a_page_token_is_refused_with_other_filters(stub):
    token = stub.ListCertificates(certificate_pb2.ListCertificatesRequest(account=ACCOUNT, page_size=3),
                                  timeout=60).next_page_token
    revoked = stub.ListCertificates(certificate_pb2.ListCertificatesRequest(status="revoked", page_size=3),
                                    timeout=60).next_page_token
    for others, used in (({"account": OTHER}, token), ({"account": ""}, token),
                         ({"account": ACCOUNT, "expiring_within_days": 10}, token),
                         ({"account": ACCOUNT, "status": "valid"}, token), ({}, revoked),
                         ({"status": "expired"}, revoked)):
        refused = refusal(lambda: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(
            **others, page_token=used), timeout=60))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "page_token" in refused.details(), others
        assert violated_fields(refused) == ["page_token"]
    # The size may change from one page to the next.
    assert stub.ListCertificates(certificate_pb2.ListCertificatesRequest(account=ACCOUNT, page_size=50,
                                                                         page_token=token), timeout=60).certificates


def test_twelve_thousand_certificates_are_listed_on_a_channel_of_grpcs_default_limit(served, stored):  # noqa: F811
    """About 900 bytes a certificate: every account's at once was 10 MiB, over any client's 4 MiB."""
    created, _ = enrol(stored, "pages-holder-many")
    with stored.database.transaction() as conn:
        template = dict(conn.execute(select(certificates).limit(1)).mappings().first())
        now = epoch_seconds(datetime.datetime.now(datetime.timezone.utc))
        conn.execute(insert(certificates), copies(template, 12_000, 100_000, created.account.id, lambda i: now + i,
                                                  lambda i: now + 86400))
    _, certificate, key = client_pair(stored, "client-ra", "ra-pages-default-limit")
    with channel_for(served, certificate, key) as channel:  # gRPC's default 4 MiB receive limit
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        pages = all_pages(stub, page_size=1000)
    assert len(serials(pages)) == len(set(serials(pages))) == len(expected(stored)) > 13_000
    assert max(p.ByteSize() for p in pages) < 4 * 1024 * 1024
