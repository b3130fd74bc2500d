"""``signserver audit ...``: check the audit chain and its seals."""

from __future__ import annotations

import argparse
from pathlib import Path

from signserver.audit.verify import verify_audit_log
from signserver.cli.common import open_service
from signserver.cli.output import print_fields, print_json
from signserver.clock import from_epoch
from signserver.config import Config


def add_parser(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="the audit log", allow_abbrev=False)
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON")
    options.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")
    p = commands.add_parser("verify", help="report modified, deleted, reordered or cut-off records and "
                            "forged, removed or missing seals", parents=[options], allow_abbrev=False)
    p.add_argument("--expect-key", metavar="SHA256HEX",
                   help="fail unless the pinned seal key has this SHA-256 fingerprint (keep it apart from the server)")
    p.set_defaults(handler=cmd_verify)
    p = commands.add_parser("seal", help="seal the head of the log now", parents=[options], allow_abbrev=False)
    p.set_defaults(handler=cmd_seal)


def cmd_verify(args, config: Config) -> int:
    service = open_service(args, config, with_database=True)
    sealer = service.sealer
    report = verify_audit_log(service.database, sealer.pin, service.clock.now(), sealer.max_seal_age,
                              expected_key=args.expect_key)
    newest = from_epoch(report.newest_seal_at).isoformat() if report.newest_seal_at is not None else None
    if args.json:
        print_json({"intact": report.intact, "records": report.records, "last_seq": report.last_seq,
                    "sealed_seq": report.sealed_seq, "seals": report.seals, "legacy_seals": report.legacy_seals,
                    "seal_key_sha256": report.seal_key, "replaced_seal_key": report.predecessor_summary,
                    "newest_seal_at": newest,
                    "server_running": report.server_running, "problems": report.problems})
    else:
        print_fields([
            ("result", "INTACT" if report.intact else "TAMPERED"),
            ("records", report.records),
            ("sealed up to", f"record {report.sealed_seq} ({report.seals} seals"
                             + (f", {report.legacy_seals} made before seals were chained)" if report.legacy_seals
                                else ")")),
            ("not yet sealed", max(report.last_seq - report.sealed_seq, 0)),
            ("newest seal", newest or "none"),
            ("server", "running, per the log" if report.server_running else "not running, per the log"),
            ("seal key SHA-256", report.seal_key or f"none pinned ({sealer.pin.path})"),
        ] + ([("replaced seal key SHA-256", report.predecessor_summary)] if report.predecessor_summary else []))
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.intact else 1


def cmd_seal(args, config: Config) -> int:
    sealed = open_service(args, config, with_database=True).sealer.seal()
    print(f"sealed the log at record {sealed}" if sealed else "nothing new to seal")
    return 0
