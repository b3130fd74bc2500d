"""``signserver store prune``: remove what the store no longer needs, now, batch after batch."""

from __future__ import annotations

import argparse
import sys
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
    p = commands.add_parser("downgrade", parents=[options], allow_abbrev=False,
                            help="bring the schema down to an older migration, to go back to the version of "
                                 "signserver that made it (stop every server first; take a backup first: the "
                                 "older schema drops what it has no room for)")
    p.add_argument("--to", required=True, metavar="REVISION",
                   help="the newest migration of the version to go back to (the newest file of its "
                        "signserver/store/migrations/versions)")
    p.add_argument("--yes", action="store_true", help="do it: without it, the command only says what it would do")
    p.set_defaults(handler=cmd_downgrade)
    p = commands.add_parser("migration", parents=[options], allow_abbrev=False,
                            help="the migration the database's schema is at, and the newest this version has")
    p.set_defaults(handler=cmd_migration)


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
    from signserver.errors import DataCorrupted
    from signserver.signing.retention import store_retention

    retention = store_retention(open_database(config), AuditLog(), SystemClock(), config.retention)
    progress = prune_progress()
    try:
        counts, audit_refused = retention.prune_all(progress=progress), None
    except DataCorrupted as exc:
        # The audit log's part refused (an export no longer matches the live log): the expired
        # tokens and operations owe nothing to it, and go all the same.
        counts, audit_refused = _prune_batches(retention, progress), exc
    if args.json:
        print_json(counts)
    else:
        print_fields([("activation tokens", f"{counts.activation_tokens} (and {counts.activation_digests} digests)"),
                      ("CSC access tokens", counts.csc_access_tokens),
                      ("CSC operations", counts.csc_operations),
                      ("e-mails sent or given up", counts.outbox_messages),
                      ("audit records", f"{counts.audit_records} (and {counts.audit_seals} seals)")])
    if audit_refused is not None:
        print(f"signserver: the audit log's retention (retention.audit_keep_days) removed no audit record: "
              f"{audit_refused}; the rest of the store was pruned", file=sys.stderr)
        return 1
    return 0


def _prune_batches(retention, progress: Callable[[PruneCounts], None]) -> PruneCounts:
    """What ``prune_all`` removes after the audit log's policy: batch after batch, until none is left.

    Raises: StoreUnavailable.
    """
    from signserver.signing.retention import PruneCounts

    counts = PruneCounts()
    while True:
        done = retention.batch()
        counts.add(done)
        progress(counts)
        if not done.total:
            return counts


def cmd_downgrade(args, config: Config) -> int:
    from signserver.store.database import Database

    # Read first, read-only: a refused run (no --yes, a mistyped path) changes and creates nothing.
    before = Database(config.database_url, config.database, read_only=True).current_migration()
    if not args.yes:
        print(f"the schema is at migration {before or 'none'}; `--yes` brings it down to {args.to}, dropping what "
              "the older schema has no room for (stop every server and take a backup first)", file=sys.stderr)
        return 1
    database = Database(config.database_url, config.database)  # as it is: never migrated up first
    database.downgrade(args.to)
    after = database.current_migration()
    if args.json:
        print_json({"from": before, "to": after})
    else:
        print(f"the schema is now at migration {after or 'none'} (it was at {before or 'none'}); start the version "
              "of signserver that made it")
    return 0


def cmd_migration(args, config: Config) -> int:
    from signserver.store.database import NEWEST_MIGRATION, Database

    # Read-only: a report, which must neither create a mistyped database nor change an existing one.
    current = Database(config.database_url, config.database, read_only=True).current_migration()
    if args.json:
        print_json({"migration": current, "newest": NEWEST_MIGRATION})
    else:
        print_fields([("migration", current or "none"), ("newest of this version", NEWEST_MIGRATION)])
    return 0
