"""`signserver ra certificates` over the core's pages: every certificate once, in the order issued,
in the same JSON and lines as a list printed whole; of one status, only that status's certificates
read from the core; and with --json, one JSON array on standard output even when the core stops
between pages."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess

import pytest

from signserver.client import CertificateClient
from signserver.ra.operations import RaOperations
from tests.ca.conftest import ca_clock, ca_service  # noqa: F401 (fixtures)
from tests.ca.test_certificate_pages import ACCOUNT, OTHER, expected, stored  # noqa: F401 (a fixture)
from tests.ca.test_certificate_service import served  # noqa: F401 (a fixture)
from tests.conftest import SIGNSERVER
from tests.grpc_api.conftest import ServerThread
from tests.ra.running import ra_in_process
from tests.ra.test_cli_operations import OPERATOR, config  # noqa: F401 (a fixture)


@pytest.fixture
def ra(config, stored, capsys, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    return ra_in_process(config, capsys, OPERATOR)


def test_every_accounts_certificates_are_printed_across_the_cores_pages(ra, stored):  # noqa: F811
    shown = ra("certificates", "--json")
    assert shown.code == 0, shown.err
    assert [c["serial"] for c in shown.json] == expected(stored) and len(shown.json) >= 1250
    assert shown.out == json.dumps(shown.json, ensure_ascii=False, indent=2) + "\n"


def test_one_accounts_certificates_as_lines(ra, stored):  # noqa: F811
    shown = ra("certificates", "--account", ACCOUNT)
    assert shown.code == 0 and [line.split()[0] for line in shown.out.splitlines()] == expected(stored, ACCOUNT)


def test_the_ra_reads_only_the_certificates_of_the_status_from_the_core(stored, config, ra_database,  # noqa: F811
                                                                        ca_clock):  # noqa: F811
    """60 revoked among 1,250 holders' certificates: one page of the core's, not every page with the
    rest thrown away (at a million certificates, a search for the few revoked would read them all)."""
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


def test_the_json_array_is_closed_when_the_core_stops_between_pages(served, ca_service, stored, config,  # noqa: F811
                                                                     tmp_path):
    """The core stopped while the operator's listing is under way: what was printed stays one JSON
    array, the error goes to standard error and the exit status says the listing failed."""
    with contextlib.ExitStack() as running:
        core = running.enter_context(ServerThread(served.config, ca_service))  # served's CA, stopped below
        settings = config.parent / f"stopping-core-{core.port}.toml"  # beside the RA's files it names
        settings.write_text(config.read_text().replace(f"localhost:{served.port}", f"localhost:{core.port}"),
                            encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
        env["SIGNSERVER_RA_OPERATOR"] = OPERATOR
        errors = tmp_path / "stderr"
        with errors.open("wb") as stderr:
            listing = subprocess.Popen([str(SIGNSERVER), "--config", str(settings), "ra", "certificates", "--json"],
                                       stdout=subprocess.PIPE, stderr=stderr, env=env)
        try:
            # Once these bytes are read the listing is under way. The command waits for the pipe to
            # be read before it asks for a page more than the pipe holds: far from the last page.
            started = listing.stdout.read(4096)
            running.close()  # the core stops
            rest = listing.stdout.read()
            code = listing.wait(60)
        finally:
            if listing.poll() is None:
                listing.kill()
                listing.wait(30)
            listing.stdout.close()
    listed = json.loads((started + rest).decode())  # one JSON value, the array closed
    every = expected(stored)
    assert code == 1, errors.read_text()
    assert 0 < len(listed) < len(every) and [c["serial"] for c in listed] == every[:len(listed)]
    assert "core" in errors.read_text()
