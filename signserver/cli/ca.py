"""``signserver ca ...``: the certification authority, for CA and RA operators."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from signserver.ca.profiles import HOLDER_PROFILES
from signserver.cli.common import check_output, open_service, read_input, whole_number_from_to, write_output
from signserver.cli.output import print_fields, print_json, print_json_array, print_table, print_table_pages
from signserver.cli.text import text_argument
from signserver.config import Config
from signserver.errors import InvalidArgument
from signserver.files import write_private_key

# The CA's modules load SQLAlchemy (and the TLS helpers gRPC): the commands import what they need
# of them, so that building the parser (every command's --help) does not.
if TYPE_CHECKING:
    from signserver.ca.authority import CaStatus
    from signserver.ca.repository import IssuedCertificate

OPERATOR = "operator:cli"
# The reasons signserver.ca.revocation.REVOCATION_REASONS offers: every RFC 5280 reason but
# removeFromCRL (only a delta CRL carries it), certificateHold and aACompromise (see NOT_OFFERED
# there); tests/test_cli_imports.py keeps the two equal. Written out: the CLI does not load the CA.
REVOCATION_REASONS = sorted(flag.value for flag in x509.ReasonFlags
                            if flag not in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold,
                                            x509.ReasonFlags.aa_compromise))
# The longest --expiring-within, a century (longer than any certificate lives; a date that far is
# still a date): the gRPC API's MAX_EXPIRY_WINDOW_DAYS, written out since the CLI does not load
# gRPC; tests/test_cli_imports.py keeps the two equal.
MAX_EXPIRY_WINDOW_DAYS = 36_500


def add_parser(subparsers) -> None:
    ca = subparsers.add_parser("ca", help="the certification authority", allow_abbrev=False)
    commands = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")

    def command(name, handler, help):
        parser = commands.add_parser(name, help=help, parents=[common], allow_abbrev=False)
        parser.set_defaults(handler=handler)
        return parser

    p = command("init", cmd_init, "create the root and issuing CA (keys in the HSM), or use an external root")
    p.add_argument("--external-root", action="store_true", help="write the issuing CA's CSR for an external root")
    p.add_argument("--csr-out", type=Path, default=Path("issuing-ca.csr"), help="where --external-root writes it")
    p.add_argument("--issuing-cert", type=Path, help="with --root-cert: install the externally signed issuing CA")
    p.add_argument("--root-cert", type=Path, help="the external root's certificate")

    command("show", cmd_show, "the CA's certificates and state")

    p = command("recertify-issuing", cmd_recertify_issuing,
                "a new certificate for the issuing CA's same key and subject (signed by the root)")
    p.add_argument("--issuing-cert", type=Path, help="under an external root: the new certificate the root signed")
    p.add_argument("--csr-out", type=Path, help="write the issuing CA's request for an external root here, and stop")

    p = command("issue", cmd_issue, "issue a holder certificate for an account")
    p.add_argument("account", type=text_argument)
    p.add_argument("--profile", required=True, choices=[p.name for p in HOLDER_PROFILES])
    p.add_argument("--csr", type=Path, help="the holder's PKCS#10 request (profiles with the key outside)")
    p.add_argument("--transaction-limit", type=int, help="qualified certificates: limit in MOP")
    p.add_argument("--agent-qualification", default="", type=text_argument,
                   help="qualified certificates: the agent's qualification")
    p.add_argument("--out", type=Path, help="write the certificate (PEM) here")

    p = command("renew", cmd_renew, "issue a successor with a new key pair")
    p.add_argument("serial", type=text_argument)
    p.add_argument("--csr", type=Path, help="a request with the new key (profiles with the key outside)")
    p.add_argument("--out", type=Path, help="write the certificate (PEM) here")

    p = command("revoke", cmd_revoke, "revoke a certificate")
    p.add_argument("serial", type=text_argument)
    p.add_argument("--reason", default="unspecified", choices=REVOCATION_REASONS)

    p = command("list", cmd_list, "list certificates")
    p.add_argument("--account", type=text_argument, help="only this account's")
    p.add_argument("--expiring-within", type=whole_number_from_to(0, MAX_EXPIRY_WINDOW_DAYS, "days"), metavar="DAYS",
                   help=f"only valid ones expiring within DAYS (0 to {MAX_EXPIRY_WINDOW_DAYS})")

    p = command("crl", cmd_crl, "write the current CRL (or sign a new one with --refresh)")
    p.add_argument("--authority", choices=["issuing", "root"], default="issuing")
    p.add_argument("--refresh", action="store_true", help="sign a new CRL now")
    p.add_argument("--out", type=Path, help="write DER here (default: PEM on standard output)")

    p = command("issue-client", cmd_issue_client, "a client certificate for an application (asp) or an RA")
    p.add_argument("name", type=text_argument,
                   help="the application's or RA operator's name (the certificate's CN)")
    p.add_argument("--role", required=True, choices=["asp", "ra"])
    p.add_argument("--out-dir", type=Path, help="where to write NAME.pem, NAME-key.pem, ca.pem (default STATE_DIR/clients)")


def _rows(certificates: list[IssuedCertificate]) -> list[list]:
    from signserver.notify.outbox import format_time

    return [[c.serial, c.profile, c.account or "-", c.status, format_time(c.not_after), c.predecessor_serial or ""]
            for c in certificates]


_HEADERS = ["SERIAL", "PROFILE", "ACCOUNT", "STATUS", "EXPIRES", "PREDECESSOR"]


def _output(issued: IssuedCertificate, args) -> int:
    """Print the certificate; write it to ``args.out`` (checked before it was issued) too.

    Raises: InvalidArgument: the file could not be written after all; the message names the
        certificate, which was issued.
    """
    if args.json:
        print_json({k: v for k, v in issued.__dict__.items() if k != "der"})
    else:
        print_table(_HEADERS, _rows([issued]))
    if args.out:
        try:
            write_output(args.out, issued.certificate.public_bytes(Encoding.PEM))
        except InvalidArgument as exc:
            raise InvalidArgument(f"certificate {issued.serial} was issued, but {exc}") from None
    return 0


def cmd_init(args, config: Config) -> int:
    if args.issuing_cert or args.root_cert:
        if not (args.issuing_cert and args.root_cert):
            raise InvalidArgument("--issuing-cert and --root-cert go together")
        issuing, root = read_input(args.issuing_cert), read_input(args.root_cert)
        open_service(args, config, with_database=True).ca.complete_external_root(issuing, root, OPERATOR)
    elif args.external_root:
        check_output(args.csr_out)
        request = open_service(args, config, with_database=True).ca.begin_external_root(OPERATOR)
        write_output(args.csr_out, request.public_bytes(Encoding.PEM))
        print(f"wrote the issuing CA's request to {args.csr_out}; have the root sign it, then run\n"
              f"  signserver ca init --issuing-cert ISSUING.pem --root-cert ROOT.pem")
        return 0
    else:
        open_service(args, config, with_database=True).ca.initialise(OPERATOR)
    return cmd_show(args, config)


def cmd_show(args, config: Config) -> int:
    from signserver.notify.outbox import format_time

    status = open_service(args, config, with_database=True).ca.status()

    def describe(certificate):
        if certificate is None:
            return "-"
        return (f"{certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x}, "
                f"until {format_time(certificate.not_valid_after_utc)})")

    if args.json:
        print_json({"ready": status.ready, "awaiting_external_root": status.awaiting_external_root,
                    "steps": status.steps,
                    **{name: (c.public_bytes(Encoding.PEM).decode() if c else None) for name, c in
                       (("root", status.root), ("issuing", status.issuing), ("ocsp_responder", status.ocsp_responder),
                        ("tsa", status.tsa))}})
    else:
        print_fields([("state", _state(status)),
                      ("root", describe(status.root)), ("issuing", describe(status.issuing)),
                      ("OCSP responder", describe(status.ocsp_responder)), ("TSA", describe(status.tsa)),
                      ("CRL", config.ca.url("crl/issuing.crl")), ("OCSP", config.ca.url("ocsp"))])
    return 0


def cmd_recertify_issuing(args, config: Config) -> int:
    from signserver.notify.outbox import format_time

    if args.csr_out and args.issuing_cert:
        raise InvalidArgument("--csr-out writes the request the root signs; --issuing-cert installs the certificate "
                              "it signed: one at a time")
    if args.csr_out:
        check_output(args.csr_out)
        request = open_service(args, config, with_database=True).ca.issuing_request()
        write_output(args.csr_out, request.public_bytes(Encoding.PEM))
        print(f"wrote the issuing CA's request to {args.csr_out}; have the root sign it, then run\n"
              f"  signserver ca recertify-issuing --issuing-cert ISSUING.pem")
        return 0
    issuing_der = read_input(args.issuing_cert)
    service = open_service(args, config, with_database=True)
    previous = service.ca.status().issuing
    new = service.ca.recertify_issuing(OPERATOR, issuing_der)
    if args.json:
        print_json({"serial": format(new.serial_number, "x"), "subject": new.subject.rfc4514_string(),
                    "not_before": new.not_valid_before_utc, "not_after": new.not_valid_after_utc,
                    "previous_serial": format(previous.serial_number, "x") if previous else None,
                    "certificate": new.public_bytes(Encoding.PEM).decode()})
        return 0
    if previous == new:
        print(f"the issuing CA's certificate is already {new.serial_number:x}; nothing changed")
        return 0
    print_fields([("issuing", new.subject.rfc4514_string()),
                  ("new certificate", f"serial {new.serial_number:x}, from {format_time(new.not_valid_before_utc)} "
                                      f"until {format_time(new.not_valid_after_utc)}"),
                  ("replaced", f"serial {previous.serial_number:x}, until {format_time(previous.not_valid_after_utc)}"
                   if previous else "-"),
                  ("published at", config.ca.url("ca/issuing.crt"))])
    print("the same key and subject: certificates, CRLs and OCSP responses signed before still verify; give relying "
          "parties the new certificate (`signserver ca show --json`)")
    return 0


def _state(status: CaStatus) -> str:
    if status.ready:
        return "ready"
    if status.awaiting_external_root:
        return "awaiting the external root's certificate"
    if not status.started:
        return "not initialised"
    done = [step for step, finished in status.steps.items() if finished]
    return (f"set-up not finished: done {', '.join(done)}; missing {', '.join(status.missing)} "
            "(`signserver ca init` or the server's next start finishes it)")


def cmd_issue(args, config: Config) -> int:
    from signserver.ca.authority import CertificateRequest

    check_output(args.out)
    request = CertificateRequest(args.profile, args.account, read_input(args.csr), args.transaction_limit,
                                 args.agent_qualification)
    service = open_service(args, config, with_database=True)
    return _output(service.ca.issue(request, OPERATOR), args)


def cmd_renew(args, config: Config) -> int:
    check_output(args.out)
    csr = read_input(args.csr)
    service = open_service(args, config, with_database=True)
    return _output(service.ca.renew(args.serial, OPERATOR, csr=csr), args)


def cmd_revoke(args, config: Config) -> int:
    return _output(open_service(args, config, with_database=True).ca.revoke(args.serial, args.reason, OPERATOR),
                   argparse.Namespace(out=None, json=args.json))


def cmd_list(args, config: Config) -> int:
    # A page of the database at a time, printed as it comes: a CA's certificates may be a million.
    pages = open_service(args, config, with_database=True).ca.list_pages(args.account, args.expiring_within)
    if args.json:
        print_json_array({k: v for k, v in c.__dict__.items() if k != "der"} for page in pages for c in page)
    else:
        print_table_pages(_HEADERS, (_rows(page) for page in pages), empty="no certificates")
    return 0


def cmd_crl(args, config: Config) -> int:
    check_output(args.out)
    service = open_service(args, config, with_database=True)
    if args.refresh:
        service.ca.publish_crls(root=args.authority == "root")
    der = service.ca.crl(args.authority)
    if args.out:
        write_output(args.out, der)
        print(f"wrote {args.out}")
    else:
        print(x509.load_der_x509_crl(der).public_bytes(Encoding.PEM).decode(), end="")
    return 0


def cmd_issue_client(args, config: Config) -> int:
    from signserver.accounts.applications import certificate_fingerprint

    out = args.out_dir or config.state_dir / "clients"
    try:
        out.mkdir(parents=True, exist_ok=True)  # the folder first: the certificate is issued for its files
    except OSError as exc:
        raise InvalidArgument(f"cannot make the folder {out}: {exc.strerror}") from None
    for name in (f"{args.name}-key.pem", f"{args.name}.pem", "ca.pem"):
        check_output(out / name, private=name.endswith("-key.pem"))
    service = open_service(args, config, with_database=True)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate(f"client-{args.role}", args.name, key.public_key(), OPERATOR)
    certificate = issued.certificate
    write_private_key(out / f"{args.name}-key.pem", key)
    (out / f"{args.name}.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    (out / "ca.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()))
    fingerprint = certificate_fingerprint(certificate)
    if args.role == "asp":
        service.applications.set_client_certificate(args.name, fingerprint)
    if args.json:
        print_json({"serial": issued.serial, "certificate": str(out / f"{args.name}.pem"),
                    "key": str(out / f"{args.name}-key.pem"), "ca": str(out / "ca.pem"), "sha256": fingerprint})
    else:
        print(f"{args.role.upper()} client certificate {issued.serial} for {args.name!r}:")
        print(f"  certificate {out / f'{args.name}.pem'}\n  key         {out / f'{args.name}-key.pem'} (mode 0600)")
        print(f"  CA chain    {out / 'ca.pem'} (also trust it for the server's certificate)")
    return 0
