"""`signserver ra certificates` over the core's pages: every certificate once, in the order issued,
in the same JSON and lines as a list printed whole."""

from __future__ import annotations

import json
import logging

import pytest

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


def test_no_certificate_of_a_status(ra):
    assert ra("certificates", "--account", OTHER, "--status", "revoked").out == "(none)\n"
    assert ra("certificates", "--account", OTHER, "--status", "revoked", "--json").json == []
