"""The `signserver` command loads only what a command needs: its help loads no database, PDF or
gRPC library, a command that signs no document loads no PDF library, and one on a database at the
newest migration loads no migration tool. The constants the
parser repeats, so as not to import the modules that define them, stay equal to theirs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from signserver.accounts.master_rotation import RETIRE_GRACE
from signserver.ca.revocation import REVOCATION_REASONS as OFFERED
from signserver.cli.ca import MAX_EXPIRY_WINDOW_DAYS, REVOCATION_REASONS
from signserver.cli.master import RETIRE_GRACE_SECONDS
from tests.conftest import cli_env

HEAVY = ("sqlalchemy", "alembic", "pyhanko", "fontTools", "aiohttp", "grpc")


def modules_loaded_by(state_dir, *arguments: str) -> tuple[int, set[str]]:
    """Run the command in a fresh interpreter; its exit code and which HEAVY libraries it loaded."""
    probe = ("import json, sys\n"
             "from signserver.cli.main import main\n"
             "try:\n"
             f"    code = main({list(arguments)!r})\n"
             "except SystemExit as exit:\n"
             "    code = exit.code\n"
             f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]), file=sys.stderr)\n"
             "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", probe], env=cli_env(state_dir), capture_output=True, text=True,
                            timeout=120)
    return result.returncode, set(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("arguments", [("--help",), ("hsm", "list", "--help"), ("account", "create", "--help"),
                                       ("audit", "verify", "--help"), ("ca", "revoke", "--help"),
                                       ("hsm", "master", "rotate", "--help"), ("store", "prune", "--help")])
def test_help_loads_no_heavy_library(state_dir, arguments):
    code, loaded = modules_loaded_by(state_dir, *arguments)
    assert code == 0 and loaded == set()


def test_listing_keys_loads_no_pdf_library(state_dir):
    code, loaded = modules_loaded_by(state_dir, "hsm", "list")
    assert code == 0
    assert not loaded & {"pyhanko", "fontTools", "aiohttp", "grpc"}


def test_a_command_on_a_database_at_the_newest_migration_loads_no_alembic(state_dir):
    modules_loaded_by(state_dir, "account", "list")  # migrates the run's database, if nothing has yet
    code, loaded = modules_loaded_by(state_dir, "account", "list")
    assert code == 0 and "sqlalchemy" in loaded and "alembic" not in loaded


def test_the_parser_offers_the_revocation_reasons_the_authority_accepts():
    assert REVOCATION_REASONS == sorted(OFFERED)


def test_the_parser_bounds_the_expiry_window_as_the_api_does():
    from signserver.grpc_api.certificate_servicer import MAX_EXPIRY_WINDOW_DAYS as API

    assert MAX_EXPIRY_WINDOW_DAYS == API


def test_the_parser_default_grace_is_the_rotation_default():
    assert RETIRE_GRACE_SECONDS == RETIRE_GRACE.total_seconds()
