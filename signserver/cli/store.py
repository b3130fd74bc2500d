"""``signserver store prune``: remove what the store no longer needs, now, batch after batch."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable

from signserver.cli.audit import open_database
from signserver.cli.output import print_fields, print_json
from signserver.cli.progress import ProgressLine
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


def prune_progress() -> Callable[[PruneCounts], None]:
    """Reports a prune on stderr, every few seconds."""
    line = ProgressLine()
    line.due()  # the prune starts now

    def report(counts: PruneCounts) -> None:
        if line.due() is not None:
            line.show(f"store prune: {counts.total:,} rows removed so far")
    return report


def cmd_prune(args, config: Config) -> int:
    # Imported here: they load SQLAlchemy, which building the parser (--help) should not.
    from signserver.audit.log import AuditLog
    from signserver.signing.retention import store_retention

    retention = store_retention(open_database(config), AuditLog(), SystemClock(), config.retention)
    counts = retention.prune_all(progress=prune_progress())
    if args.json:
        print_json(counts)
    else:
        print_fields([("activation tokens", f"{counts.activation_tokens} (and {counts.activation_digests} digests)"),
                      ("CSC access tokens", counts.csc_access_tokens),
                      ("CSC operations", counts.csc_operations),
                      ("audit records", f"{counts.audit_records} (and {counts.audit_seals} seals)")])
    return 0
