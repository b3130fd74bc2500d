"""`signserver ra certificates` over the core's pages: every certificate once, in the order issued,
in the same JSON and lines as a list printed whole; of one status, only that status's certificates
read from the core."""

from __future__ import annotations

import json
import logging

import pytest

from signserver.client import CertificateClient
from signserver.ra.operations import RaOperations
from tests.ca.conftest import ca_clock, ca_service  # noqa: F401 (fixtures)
from tests.ca.test_certificate_pages import ACCOUNT, OTHER, expected, stored  # noqa: F401 (a fixture)
from tests.ca.test_certificate_service import served  # noqa: F401 (a fixture)
from tests.ra.running import ra_in_process
from tests.ra.test_cli_operations import OPERATOR, config  # noqa: F401 (a fixture)


@pytest.fixture
def ra(config, stored, capsys, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    return ra_in_process(config, capsys, OPERATOR)


def test_every_accounts_certificates_are_printed_across_the_cores_pages(ra, stored):  # noqa: F811
    shown = ra("certificates", "--json")
    assert shown.code == 0, shown.err
    assert [c["serial"] for c in shown.json] == expected(stored) and len(shown.json) > 1250
    assert shown.out == json.dumps(shown.json, ensure_ascii=False, indent=2) + "\n"


def test_one_accounts_certificates_as_lines(ra, stored):  # noqa: F811
    shown = ra("certificates", "--account", ACCOUNT)
    assert shown.code == 0 and [line.split()[0] for line in shown.out.splitlines()] == expected(stored, ACCOUNT)


def test_the_ra_reads_only_the_certificates_of_the_status_from_the_core(stored, config, ra_database,  # noqa: F811
                                                                        ca_clock):  # noqa: F811
    """60 revoked among more than 1,250: one page of the core's, not every page with the rest thrown
    away (at a million certificates, a search for the few revoked would read them all)."""
    folder = config.parent
    address = next(line.split('"')[1] for line in config.read_text().splitlines() if line.startswith("core_address"))
    with CertificateClient(address, root_certificates=(folder / "roots.pem").read_bytes(),
                           client_certificate=(folder / "ra.pem").read_bytes(),
                           client_key=(folder / "ra-key.pem").read_bytes(), timeout_seconds=60) as core:
        pages = list(RaOperations(ra_database, ca_clock, core).certificate_pages(status="revoked"))
    revoked = expected(stored, status="revoked")
    assert len(revoked) == 60 and [[c.serial for c in page] for page in pages] == [revoked]


def test_the_certificates_of_a_status(ra, stored):  # noqa: F811
    shown = ra("certificates", "--status", "revoked", "--json")
    assert shown.code == 0, shown.err
    assert [c["serial"] for c in shown.json] == expected(stored, status="revoked")
    assert {c["status"] for c in shown.json} == {"revoked"}
    expired = ra("certificates", "--status", "expired")
    assert [line.split()[0] for line in expired.out.splitlines()] == expected(stored, status="expired")


def test_no_certificate_of_a_status(ra):
    assert ra("certificates", "--account", OTHER, "--status", "revoked").out == "(none)\n"
    assert ra("certificates", "--account", OTHER, "--status", "revoked", "--json").json == []

