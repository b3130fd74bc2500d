"""``signserver audit ...``: check the audit chain and its seals, seal it, export and prune segments.

Checking, exporting and pruning need the database and the pinned seal key, never the HSM (nor
its PIN): an auditor's account that can read the database and the state directory is enough.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from signserver.audit.record_time import time_text
from signserver.audit.seal_key import SealKeyPin
from signserver.cli.common import open_service
from signserver.cli.output import print_fields, print_json
from signserver.cli.progress import ProgressLine
from signserver.clock import SystemClock
from signserver.config import Config
from signserver.errors import ConfigurationError, InvalidArgument

# The audit modules load SQLAlchemy: each command imports what it needs, so that building the
# parser (every command's --help) does not.
if TYPE_CHECKING:
    from signserver.audit.chain_check import AuditReport, PinnedKeys
    from signserver.audit.live_log import Progress
    from signserver.store.database import Database

OPERATOR = "operator:cli"
# The first migration from which the audit tables (records, head, seals, exports, anchor) have
# the columns this version reads: `audit verify` reads a database at it or later as it is.
AUDIT_TABLES_SINCE = "0014"


def add_parser(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="the audit log", allow_abbrev=False)
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON")
    options.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")
    p = commands.add_parser("verify", help="report modified, deleted, reordered or cut-off records and "
                            "forged, removed or missing seals", parents=[options], allow_abbrev=False)
    p.add_argument("--expect-key", metavar="SHA256HEX", type=_fingerprint,
                   help="fail unless the pinned seal key has this SHA-256 fingerprint (keep it apart from the server)")
    p.add_argument("--full", action="store_true",
                   help="walk the whole live log, not only what came after the last seal an earlier run found intact")
    p.add_argument("--file", type=Path, action="append", metavar="FILE",
                   help="check exported segment files alone (no database), in order; repeat for several")
    p.set_defaults(handler=cmd_verify)
    p = commands.add_parser("seal", help="seal the head of the log now", parents=[options], allow_abbrev=False)
    p.set_defaults(handler=cmd_seal)
    p = commands.add_parser("export", help="write the records up to a seal, and their seals, to a file that "
                            "`audit verify --file` checks alone", parents=[options], allow_abbrev=False)
    p.add_argument("--until", type=_seq, required=True, metavar="SEQ",
                   help="the last record: the segment ends at the newest seal at or before it")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the segment file (never overwritten; gzip-compressed when it ends in .gz)")
    p.set_defaults(handler=cmd_export)
    p = commands.add_parser("prune", help="remove exported records up to SEQ from the database",
                            parents=[options], allow_abbrev=False)
    p.add_argument("--until", type=_seq, required=True, metavar="SEQ",
                   help="the last record of an export (`audit export` prints it)")
    p.set_defaults(handler=cmd_prune)


def _seq(text: str) -> int:
    """A record's sequence number (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a record's number is a whole number from 1, not {text!r}")
    return value


def _fingerprint(text: str) -> str:
    """A SHA-256 fingerprint: 64 hexadecimal digits, ``AB:CD:...`` accepted (argparse type)."""
    from signserver.audit.seal_key import normalise_fingerprint

    value = normalise_fingerprint(text)
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError("a SHA-256 fingerprint is 64 hexadecimal digits (as `audit verify` "
                                         f"prints it), not {text!r}")
    return value


def open_database(config: Config, upgrade: bool = True) -> Database:
    """The configured database, its schema brought up to date; without ``upgrade``, as it is
    (see :func:`check_schema_readable`) and opened read-only: no row of either store changes,
    nor a SQLite file's bytes, mode or journal mode (SQLite reads a file in WAL mode only through
    its -wal and -shm files, and makes them beside it when they are not there: see
    :class:`~signserver.store.database.Database`).

    Raises: ConfigurationError: it cannot be opened; a SQLite file that does not exist (a
        mistyped URL or state directory) is not made: an empty log there would verify as intact;
        without ``upgrade``, its schema is one whose audit log this version cannot read.
    """
    from signserver.store.database import Database

    missing = sqlite_file_not_made(config)
    if missing is not None:
        raise ConfigurationError("database.url", f"no database at {missing}: check the URL (or the state "
                                                 "directory); the server makes it when it first starts")
    database = Database(config.database_url, config.database, read_only=not upgrade)
    if upgrade:
        database.migrate()
    else:
        check_schema_readable(database)
    return database


def sqlite_file_not_made(config: Config) -> Path | None:
    """The configured SQLite file when it does not exist (yet): None for one that does, and for
    PostgreSQL.

    Raises: ConfigurationError: the URL is not one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not config.database_url.startswith("sqlite"):
        return None
    try:
        path = make_url(config.database_url).database
    except ArgumentError as exc:
        raise ConfigurationError("database.url", f"not a database URL: {exc}") from None
    if path and path != ":memory:" and not Path(path).exists():
        return Path(path)
    return None


def check_schema_readable(database: Database) -> None:
    """Whether this version can read the audit log of ``database`` as it is, without upgrading it:
    an auditor checks a production database, or a copy or backup that must stay as it was, and an
    upgrade would rewrite it (migration 0020 copies every audit record on SQLite). The audit tables
    have their present columns from migration AUDIT_TABLES_SINCE on.

    Raises: ConfigurationError: no schema, one older than that, or one a newer version made.
    """
    from signserver.store.database import NEWEST_MIGRATION

    found = database.current_migration()
    if found == NEWEST_MIGRATION:
        return
    known = found is not None and found.isdigit() and len(found) == len(NEWEST_MIGRATION)
    if known and AUDIT_TABLES_SINCE <= found < NEWEST_MIGRATION:
        return
    if found is None:
        why = "holds no signserver schema (no migration version)"
    elif known and found > NEWEST_MIGRATION:
        why = (f"is at migration {found}, which a newer version of signserver made (this one knows up to "
               f"{NEWEST_MIGRATION}): check it with that version")
    else:
        why = (f"is at migration {found}, older than {AUDIT_TABLES_SINCE}, whose audit log this version (schema "
               f"{NEWEST_MIGRATION}) cannot read: check it with the signserver version that wrote it, or upgrade "
               "it with this one first (`signserver serve` upgrades the schema when it starts)")
    raise ConfigurationError("database.url", f"the database {why}; `audit verify` checks a database as it is and "
                                             "never upgrades it")


def walk_progress(what: str) -> Callable[[Progress], None]:
    """Reports a long walk of the chain on stderr, every few seconds, with its rate."""
    line = ProgressLine()
    line.due()  # the walk starts now

    def report(progress: Progress) -> None:
        elapsed = line.due()
        if elapsed is not None:
            line.show(f"{what}: {progress.walked:,} records, at record {progress.last_seq:,} of {progress.until:,} "
                      f"({progress.walked / elapsed:,.0f} records/s)")
    return report


def cmd_verify(args, config: Config) -> int:
    from signserver.audit.seal import max_seal_age, pin_path
    from signserver.audit.verified_mark import VerifiedMark
    from signserver.audit.verify import verify_audit_log

    pin = SealKeyPin(pin_path(config.state_dir))
    allowance = max_seal_age(config.audit.seal_interval_seconds)
    if args.file:
        return _verify_files(args, pin, allowance)
    database = open_database(config, upgrade=False)  # checked as it is: never written
    clock = SystemClock()
    report = verify_audit_log(database, pin, clock.now(), allowance, expected_key=args.expect_key,
                              mark=VerifiedMark(config.state_dir, config.database_url), full=args.full,
                              progress=walk_progress("audit verify"))
    newest = time_text(report.newest_seal_at) if report.newest_seal_at is not None else None
    if args.json:
        print_json({"intact": report.intact, "records": report.records, "first_seq": report.first_seq,
                    "last_seq": report.last_seq, "walked": report.walked,
                    "resumed_after_seal": report.resumed_after_seal,
                    "sealed_seq": report.sealed_seq, "seals": report.seals, "legacy_seals": report.legacy_seals,
                    "seal_key_sha256": report.seal_key, "replaced_seal_key": report.predecessor_summary,
                    "newest_seal_at": newest,
                    "server_running": report.server_running, "problems": report.problems})
    else:
        print_fields([
            ("result", "INTACT" if report.intact else "TAMPERED"),
            ("records", f"{report.records} (records {report.first_seq} to {report.last_seq}"
                        + (f"; earlier ones were exported and pruned)" if report.first_seq > 1 else ")")),
            ("checked now", f"{report.walked} records, after seal {report.resumed_after_seal} that an earlier run "
                            "found intact (--full walks them all)" if report.resumed_after_seal is not None
                            else f"{report.walked} records, all of them"),
            ("sealed up to", f"record {report.sealed_seq} ({report.seals} seals"
                             + (f", {report.legacy_seals} made before seals were chained)" if report.legacy_seals
                                else ")")),
            ("not yet sealed", max(report.last_seq - report.sealed_seq, 0)),
            ("newest seal", newest or "none"),
            ("server", "running, per the log" if report.server_running else "not running, per the log"),
            ("seal key SHA-256", report.seal_key or f"none pinned ({pin.path})"),
        ] + ([("replaced seal key SHA-256", report.predecessor_summary)] if report.predecessor_summary else []))
        _print_problems(report)
    return 0 if report.intact else 1


def _verify_files(args, pin: SealKeyPin, allowance) -> int:
    from signserver.audit.segment_check import verify_segment_files

    for path in args.file:
        _check_readable(path)
    local, pin_problems = _local_pins(pin)
    checked = verify_segment_files(args.file, allowance, pinned=local, expected_key=args.expect_key,
                                   progress=walk_progress("audit verify --file"))
    report = checked.report
    for problem in pin_problems:  # a pin that cannot be read checks nothing: never silently
        report.problem(problem)
    checked.keys_from_files_only = checked.keys_from_files_only and not pin_problems
    if args.json:
        print_json({"intact": report.intact, "files": [{"path": str(f.path), "first_seq": f.first_seq,
                                                         "last_seq": f.last_seq, "records": f.records,
                                                         "seals": f.seals} for f in checked.files],
                    "records": report.records, "sealed_seq": report.sealed_seq, "seals": report.seals,
                    "seal_key_sha256": report.seal_key, "keys_from_files_only": checked.keys_from_files_only,
                    "problems": report.problems})
    else:
        print_fields([
            ("result", "INTACT" if report.intact else "TAMPERED"),
            ("files", ", ".join(f"{f.path.name} (records {f.first_seq} to {f.last_seq})" for f in checked.files)
             or "none readable"),
            ("records", report.records),
            ("seals", report.seals),
            ("seal key SHA-256", (report.seal_key or "none")
             + (" (from the files alone: compare it with the fingerprint kept apart, or pass --expect-key)"
                if checked.keys_from_files_only else "")),
        ])
        _print_problems(report)
    return 0 if report.intact else 1


def _check_readable(path: Path) -> None:
    """Raises: InvalidArgument: ``path`` is no file this user can read (not a damaged segment:
    nothing to check)."""
    if not path.exists():
        raise InvalidArgument(f"{path}: no such file")
    if not path.is_file():
        raise InvalidArgument(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise InvalidArgument(f"{path}: cannot be read (permission denied)")


def _local_pins(pin: SealKeyPin) -> tuple[PinnedKeys | None, list[str]]:
    """The state directory's pins, when there are any to compare a file's keys with, and what
    is wrong with them (an unreadable pin file)."""
    from signserver.audit.chain_check import AuditReport, pinned_keys

    found = AuditReport()
    keys = pinned_keys(pin, None, found)
    return (keys if not found.problems else None), found.problems


def _print_problems(report: AuditReport) -> None:
    for problem in report.problems:
        print(f"  - {problem}")


def cmd_seal(args, config: Config) -> int:
    sealed = open_service(args, config, with_database=True).sealer.seal()
    if args.json:
        print_json({"sealed_seq": sealed})  # null: nothing new to seal
    else:
        print(f"sealed the log at record {sealed}" if sealed else "nothing new to seal")
    return 0


def cmd_export(args, config: Config) -> int:
    from signserver.audit.export import export_segment
    from signserver.audit.log import AuditLog
    from signserver.audit.seal import max_seal_age, pin_path

    database = open_database(config)
    exported = export_segment(database, AuditLog(), SealKeyPin(pin_path(config.state_dir)), args.until, args.out,
                              SystemClock().now(), max_seal_age(config.audit.seal_interval_seconds), OPERATOR,
                              progress=walk_progress("audit export"))
    if args.json:
        print_json(exported)
    else:
        print_fields([("file", exported.path), ("records", f"{exported.first_seq} to {exported.last_seq} "
                                                            f"({exported.records})"),
                      ("seals", f"{exported.seals}, the last seal {exported.seal_number}"),
                      ("SHA-256", exported.sha256),
                      ("next", f"keep the file, then `signserver audit prune --until {exported.last_seq}`")])
    return 0


def cmd_prune(args, config: Config) -> int:
    from signserver.audit.log import AuditLog
    from signserver.audit.pruning import AuditPruner

    database = open_database(config)
    clock = SystemClock()
    pruner = AuditPruner(database, AuditLog(), clock, config.retention.audit_keep_days, config.retention.batch_rows)
    anchor = pruner.prune(args.until, OPERATOR)
    removed_records = removed_seals = 0
    line = ProgressLine()
    line.due()
    while True:
        removed = pruner.remove_batch()
        removed_records += removed.records
        removed_seals += removed.seals
        if not removed.records and not removed.seals:
            break
        if line.due() is not None:
            line.show(f"audit prune: {removed_records:,} records and {removed_seals:,} seals removed")
    if args.json:
        print_json({"until": anchor.seq, "seal": anchor.seal_number, "export_sha256": anchor.export_sha256,
                    "records_removed": removed_records, "seals_removed": removed_seals})
    else:
        print(f"the live log now starts after record {anchor.seq} (sealed by seal {anchor.seal_number}); removed "
              f"{removed_records} records and {removed_seals} seals")
    return 0
