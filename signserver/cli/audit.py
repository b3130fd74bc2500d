"""``signserver audit ...``: check the audit chain and its seals."""

from __future__ import annotations

import argparse
from pathlib import Path

from signserver.audit.verify import verify_audit_log
from signserver.cli.common import open_service
from signserver.cli.output import print_fields, print_json
from signserver.config import Config


def add_parser(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="the audit log", allow_abbrev=False)
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON")
    options.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")
    p = commands.add_parser("verify", help="report modified, deleted, reordered or cut-off records",
                            parents=[options], allow_abbrev=False)
    p.set_defaults(handler=cmd_verify)
    p = commands.add_parser("seal", help="seal the head of the log now", parents=[options], allow_abbrev=False)
    p.set_defaults(handler=cmd_seal)


def cmd_verify(args, config: Config) -> int:
    service = open_service(args, config, with_database=True)
    report = verify_audit_log(service.database, service.keys)
    if args.json:
        print_json({"intact": report.intact, "records": report.records, "last_seq": report.last_seq,
                    "sealed_seq": report.sealed_seq, "seals": report.seals, "problems": report.problems})
    else:
        print_fields([
            ("result", "INTACT" if report.intact else "TAMPERED"),
            ("records", report.records),
            ("sealed up to", f"record {report.sealed_seq} ({report.seals} seals)"),
            ("not yet sealed", max(report.last_seq - report.sealed_seq, 0)),
        ])
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.intact else 1


def cmd_seal(args, config: Config) -> int:
    sealed = open_service(args, config, with_database=True).sealer.seal()
    print(f"sealed the log at record {sealed}" if sealed else "nothing new to seal")
    return 0
