"""`signserver ca list` reads the database a page at a time and prints each page as it comes: its
memory holds a page, however many certificates the CA issued (at a national scale, a million: a
listing read whole took gigabytes); every certificate once, in the order issued; and `--json` one
JSON array, closed even when the database fails between pages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import insert, select, text

from signserver.store.database import Database
from signserver.store.schema import authorities, certificates
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, database_url

LISTED = 20_000
# Run in a child process: the memory Python's objects take at most while `ca list` runs, counted
# once the modules a listing uses are imported (their own memory is no part of the listing's).
PEAK_OF_LISTING = """
import sys, tracemalloc
from pathlib import Path
import signserver.cli.main, signserver.service, signserver.ca.authority, sqlalchemy.dialects.sqlite
try:
    import sqlalchemy.dialects.postgresql.psycopg
except ImportError:
    pass
tracemalloc.start()
code = signserver.cli.main.main(sys.argv[2:])
Path(sys.argv[1]).write_text(str(tracemalloc.get_traced_memory()[1]))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def issued(state_dir, tmp_path_factory):
    """A CA's database holding LISTED certificates of no account besides its own, ten issued each
    second; returns its folder and the bytes of DER they hold."""
    folder = tmp_path_factory.mktemp("ca-list-pages")
    init = run(state_dir, folder, "ca", "init")
    assert init.returncode == 0, init.stderr
    database = Database(database_url(folder / "signserver.db"))
    try:
        with database.transaction() as conn:
            der = conn.execute(select(authorities.c.certificate).where(authorities.c.name == "issuing")).scalar_one()
            rows = [{"serial": f"{i:040x}", "profile": "standard-government", "account_id": None,
                     "credential_id": None, "subject": f"CN=Holder {i},O=DSAJ,C=MO", "not_before": 1_700_000_000,
                     "not_after": 4_100_000_000, "status": "valid", "predecessor_serial": None,
                     "issued_at": 1_700_000_000 + i // 10, "der": der} for i in range(1, LISTED + 1)]
            conn.execute(insert(certificates), rows)
    finally:
        database.dispose()
    return folder, LISTED * len(der)


def run(state_dir, folder, *args):
    return cli_forkserver.run([str(SIGNSERVER), *args], capture_output=True, text=True, timeout=300,
                              env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(folder / "signserver.db")))


def listed_serials(folder) -> list[str]:
    """Every certificate's serial, in the order issued, as the database holds them."""
    database = Database(database_url(folder / "signserver.db"))
    try:
        with database.read() as conn:
            return list(conn.execute(select(certificates.c.serial)
                                     .order_by(certificates.c.issued_at, certificates.c.serial)).scalars())
    finally:
        database.dispose()


def peak_of_listing(state_dir, folder, tmp_path, *args: str) -> int:
    peak = tmp_path / "peak"
    with (tmp_path / "listing").open("wb") as out:
        ran = subprocess.run([sys.executable, "-c", PEAK_OF_LISTING, str(peak), *args], stdout=out,
                             stderr=subprocess.PIPE, text=True, timeout=300,
                             env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(folder / "signserver.db")))
    assert ran.returncode == 0, ran.stderr
    return int(peak.read_text())


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["table", "json"])
def test_a_listing_holds_a_page_in_memory_not_every_certificate(state_dir, issued, tmp_path, output):
    folder, der_bytes = issued
    # A window of no day lists none: what the command takes besides the certificates it lists.
    none = peak_of_listing(state_dir, folder, tmp_path, "ca", "list", "--expiring-within", "0", *output)
    every = peak_of_listing(state_dir, folder, tmp_path, "ca", "list", *output)
    # A twentieth of the certificates' DER is a thousand certificates, ten pages: the whole
    # listing read at once took more than the DER itself.
    assert der_bytes > 10 * 1024 * 1024 and every < none + der_bytes / 20, (every, none, der_bytes)


def test_every_certificate_is_printed_once_in_the_order_issued(state_dir, issued):
    folder, _ = issued
    serials = listed_serials(folder)
    shown = run(state_dir, folder, "ca", "list", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [c["serial"] for c in json.loads(shown.stdout)] == serials and len(serials) > LISTED
    table = run(state_dir, folder, "ca", "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SERIAL", "PROFILE", "ACCOUNT", "STATUS", "EXPIRES", "PREDECESSOR"]
    assert set(lines[1]) == {"-", " "} and [line.split()[0] for line in lines[2:]] == serials


def test_the_json_array_is_closed_when_the_database_fails_between_pages(state_dir, issued, tmp_path):
    folder, _ = issued
    serials = listed_serials(folder)
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(folder / "signserver.db"))
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr:
        listing = subprocess.Popen([str(SIGNSERVER), "ca", "list", "--json"], stdout=subprocess.PIPE, stderr=stderr,
                                   env=env)
    database = Database(database_url(folder / "signserver.db"))
    try:
        # Once these bytes are read the listing is under way. The command waits for the pipe to be
        # read before it reads a page more than the pipe holds: far from the last page.
        started = listing.stdout.read(4096)
        with database.transaction() as conn:  # the database fails the pages that follow
            conn.execute(text("ALTER TABLE certificates RENAME TO certificates_away"))
        rest = listing.stdout.read()
        code = listing.wait(60)
    finally:
        if listing.poll() is None:
            listing.kill()
            listing.wait(30)
        listing.stdout.close()
        with database.transaction() as conn:
            conn.execute(text("ALTER TABLE certificates_away RENAME TO certificates"))
        database.dispose()
    listed = json.loads((started + rest).decode())  # one JSON value, the array closed
    assert code == 1, errors.read_text()
    assert 0 < len(listed) < len(serials) and [c["serial"] for c in listed] == serials[:len(listed)]
    assert errors.read_text().startswith("signserver: ")
