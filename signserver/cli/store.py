"""``signserver store prune``: remove what the store no longer needs, now, batch after batch."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from signserver.cli.audit import PROGRESS_EVERY_SECONDS, open_database
from signserver.cli.output import print_fields, print_json
from signserver.clock import SystemClock
from signserver.config import Config

if TYPE_CHECKING:
    from signserver.signing.retention import PruneCounts


def add_parser(subparsers) -> None:
    store = subparsers.add_parser("store", help="the database", allow_abbrev=False)
    commands = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON")
    p = commands.add_parser("prune", parents=[options], allow_abbrev=False,
                            help="remove expired activation tokens and CSC tokens and operations, and audit records "
                                 "as [retention] says, in small transactions (what the server does in the background)")
    p.set_defaults(handler=cmd_prune)


class _Progress:
    def __init__(self):
        self._shown = time.monotonic()

    def __call__(self, counts: PruneCounts) -> None:
        if time.monotonic() - self._shown >= PROGRESS_EVERY_SECONDS:
            self._shown = time.monotonic()
            print(f"store prune: {counts.total:,} rows removed so far", file=sys.stderr, flush=True)


def cmd_prune(args, config: Config) -> int:
    # Imported here: they load SQLAlchemy, which building the parser (--help) should not.
    from signserver.audit.log import AuditLog
    from signserver.signing.retention import store_retention

    retention = store_retention(open_database(config), AuditLog(), SystemClock(), config.retention)
    counts = retention.prune_all(progress=_Progress())
    if args.json:
        print_json(counts)
    else:
        print_fields([("activation tokens", f"{counts.activation_tokens} (and {counts.activation_digests} digests)"),
                      ("CSC access tokens", counts.csc_access_tokens),
                      ("CSC operations", counts.csc_operations),
                      ("audit records", f"{counts.audit_records} (and {counts.audit_seals} seals)")])
    return 0
