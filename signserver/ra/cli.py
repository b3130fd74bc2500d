"""`signserver ra ...`: the RA's process and its operators' commands. Runs without the core's
modules (the core's command line hands over before it imports them). Errors become messages and
exit codes here, in one place."""

from __future__ import annotations

import argparse
import datetime
import getpass
import logging
import os
import re
import sys
from pathlib import Path

from signserver.interrupts import interrupts_held
from signserver.json_array import JsonArrayWriter
from signserver.ra import operator_cli
from signserver.ra.errors import CoreUnavailable, OperationRefused, RaError, SettingsError
from signserver.ra.help_codes import DEFAULT_LANGUAGE, HELP_CODES, LANGUAGES
from signserver.ra.renewal import Holder, State
from signserver.ra.secret_input import SecretInput
from signserver.ra.settings import load_settings
from signserver.terminal_text import json_text

EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h
# Run by the service or a timer rather than a person: no operator name to check.
UNNAMED_COMMANDS = frozenset({"serve", "notices"})
# The longest values the RA's store keeps (signserver/ra/store/schema.py): a longer one is refused
# before anything is done, not by the database once the core has acted (an enrolment's account
# made, and its OTP seed and recovery code lost with the refusal).
MAX_ACCOUNT = 128
MAX_ID_TYPE = 32
MAX_ID_NUMBER = 64
MAX_NAME = 256
MAX_EMAIL = 320
MAX_TEXT = 256
MAX_SERIAL = 64
MAX_RENEWAL_ID = 32
MAX_OUTBOX_ID = 2 ** 31 - 1  # the outbox's ids (signserver/ra/store/repository.py)
MAX_DAYS = 2 ** 32 - 1  # the core's fields: ListCertificates' uint32 days, IssueCertificate's uint64 limit
MAX_TRANSACTION_LIMIT = 2 ** 64 - 1
# The holders' certificate types of the documents, each in a government and a corporate variant
# (the core's holder profiles): one mistyped is refused before the core makes the account.
PROFILES = tuple(f"{kind}-{variant}" for kind in ("cloud-signature", "qualified", "standard", "encryption")
                 for variant in ("government", "corporate"))
# One mailbox, nothing else: no character that would make the address a list or a display name
# ("a@b.mo,c@d.mo", "Name <a@b.mo>"), which a mail server would take for other recipients.
_ATOM = r'[^@\s,;:<>()\[\]\\"]'
EMAIL = re.compile(rf"{_ATOM}{{1,64}}@{_ATOM}+\.{_ATOM}+")


def text(max_length: int = MAX_TEXT, *, required: bool = True):
    """An argparse ``type`` for a text argument: the value stripped, refused before anything is
    done when it is empty (``required``), longer than ``max_length``, not UTF-8 text (a byte of
    another encoding reaches Python as a lone surrogate, which no database keeps and no
    certificate carries) or holds a control character (a line break would forge a line of the
    audit trail's listing and of the logs). argparse checks a default given as a string the same
    way ($SIGNSERVER_RA_OPERATOR)."""
    def checked(value: str) -> str:
        value = value.strip()
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise argparse.ArgumentTypeError("not valid UTF-8 text (check the terminal's encoding)") from None
        if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in value):
            raise argparse.ArgumentTypeError("a control character (a line break, a tab ...) is not allowed")
        if required and not value:
            raise argparse.ArgumentTypeError("empty")
        if len(value) > max_length:
            raise argparse.ArgumentTypeError(f"longer than {max_length} characters")
        return value
    return checked


def number(low: int, high: int, what: str):
    """An argparse ``type``: a whole number from ``low`` to ``high`` (the core's field holds no
    other: out of its range the request could not even be built, for an enrolment once the
    account was made)."""
    def checked(value: str) -> int:
        try:
            parsed = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not low <= parsed <= high:
            raise argparse.ArgumentTypeError(f"{what} from {low} to {high}")
        return parsed
    return checked


def email(value: str) -> str:
    """An argparse ``type``: one e-mail address (as ``text``, and one mailbox, nothing else)."""
    value = text(MAX_EMAIL)(value)
    if not EMAIL.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not one e-mail address")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signserver ra", allow_abbrev=False,
                                     description="the registration authority: its process and its operators' commands")
    parser.add_argument("--config", type=Path,
                        help="configuration file (default: $SIGNSERVER_CONFIG or ./signserver.toml)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--lang", choices=LANGUAGES, default=DEFAULT_LANGUAGE,
                        help="the language of a help code's guidance (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the RA (its JSON API, its pages and background work)")
    serve.add_argument("--demo", action="store_true",
                       help="with a demonstration holder, operator and renewal (beside `signserver serve --demo`)")
    serve.set_defaults(handler=cmd_serve)

    holder = commands.add_parser("holder", help="record a holder's registered identity data (as at enrolment)")
    _identity_arguments(holder, id_type_help="e.g. BIR (Macau resident identity card)", name_help=None)
    holder.set_defaults(handler=cmd_holder)

    confirm = commands.add_parser("confirm-renewal",
                                  help="confirm the renewal of a certificate (the organisation's part)")
    confirm.add_argument("serial", type=text(MAX_SERIAL))
    confirm.set_defaults(handler=cmd_confirm)

    listing = commands.add_parser("renewals", help="list renewals")
    listing.add_argument("--state", choices=[s.value for s in State], action="append")
    listing.add_argument("--account", default="", type=text(MAX_ACCOUNT, required=False))
    listing.set_defaults(handler=cmd_renewals)

    commands.add_parser("in-person", help="the in-person queue").set_defaults(handler=cmd_in_person)

    complete = commands.add_parser(
        "complete-in-person", help="complete a renewal at the counter: the core renews the certificate",
        description="Renews the certificate through the core with the key of the CSR made on the holder's card "
                    "and the evidence of the renewal's identity steps; prints the new serial. Run again after a "
                    "failure: a certificate the core issued already is recorded, not a second one.")
    complete.add_argument("renewal_id", type=text(MAX_RENEWAL_ID))
    complete.add_argument("--csr", type=Path, required=True,
                          help="the PKCS#10 request (PEM or DER) made on the holder's card")
    complete.set_defaults(handler=cmd_complete)

    commands.add_parser("notices", help="send the due renewal notices once").set_defaults(handler=cmd_notices)

    mail = commands.add_parser(
        "outbox", help="the e-mails not sent yet and those given up, with why the last attempt failed",
        description="Each queued e-mail: its recipient, subject, attempts, next attempt (or when it was given "
                    "up: those stay listed 30 days), the last failure (the SMTP server's reply or the "
                    "connection's error), the renewal and account it is about, and who marked it dealt with. "
                    "Never a message's body.")
    mail.add_argument("--dismiss", type=number(1, MAX_OUTBOX_ID, "an e-mail's number"), metavar="ID",
                      help="mark the e-mail given up ID dealt with (the holder was reached another way): it no "
                           "longer counts on the operators' dashboard")
    mail.set_defaults(handler=cmd_outbox)

    resend = commands.add_parser(
        "resend-notice", help="e-mail a renewal's notice again, with a new access key",
        description="The holder lost the notice, or its access key leaked: a new key is e-mailed and the one "
                    "before stops working.")
    resend.add_argument("renewal_id", type=text(MAX_RENEWAL_ID))
    resend.set_defaults(handler=cmd_resend_notice)

    reopen = commands.add_parser(
        "reopen-limits", help="let a holder go on past the renewal's limits (codes, registry, photos)",
        description="Unblocks the e-mail addresses a renewal blocked after too many codes or wrong codes, and "
                    "starts the counts of codes, registry lookups and face comparisons again.")
    reopen.add_argument("renewal_id", type=text(MAX_RENEWAL_ID))
    reopen.set_defaults(handler=cmd_reopen_limits)

    # Served by `signserver ra registry-dev`, which the command line hands to that program directly.
    commands.add_parser("registry-dev", help="the reference identity registry, for development and tests",
                        add_help=False)

    _operations_commands(commands)
    operator_cli.add_commands(commands)

    trail = commands.add_parser("audit", help="the RA's audit trail, checked")
    trail.add_argument("--renewal", default="", type=text(MAX_RENEWAL_ID, required=False))
    trail.set_defaults(handler=cmd_audit)
    for command in commands.choices.values():
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        command.add_argument("--lang", choices=LANGUAGES, default=argparse.SUPPRESS,
                             help="the language of a help code's guidance (default: zh-Hant)")
        command.add_argument("--operator", default=_user(), type=text(MAX_ACCOUNT, required=False),
                             help="the operator's name in the audit trail "
                                  "(default: $SIGNSERVER_RA_OPERATOR or the user)")
    return parser


SECRETS_FD_HELP = ("read the secrets from this file descriptor, one a line in the order the prompts ask "
                   "them, a new one once (default: prompts at the terminal)")
REASONS = ("unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation",
           "privilegeWithdrawn")


def _operations_commands(commands) -> None:
    """The operator's work beyond renewals: enrol, unlock, revoke, list and search."""
    enrol = commands.add_parser(
        "enrol", help="enrol a holder: the account, a certificate of any profile, the registered identity data",
        description="Creates the holder's account in the core and issues the certificate. Asks for the holder's "
                    "first password (twice) and a revocation phrase (may be empty). A cloud-signature "
                    "certificate's key is made in the core: its OTP URI and the recovery code are printed once. "
                    "Every other profile takes the CSR made on the holder's card (--csr).")
    enrol.add_argument("--profile", required=True, choices=PROFILES, metavar="PROFILE",
                       help="one of " + ", ".join(PROFILES))
    _identity_arguments(enrol, id_type_help="e.g. BIR (Macau resident identity card), PASSPORT",
                        name_help="the name as on the identity document")
    enrol.add_argument("--kind", choices=("personal", "corporate", "government"), default="personal")
    optional = text(MAX_TEXT, required=False)
    enrol.add_argument("--organisation", default="", type=optional)
    enrol.add_argument("--department", default="", type=optional)
    enrol.add_argument("--title", default="", type=optional)
    enrol.add_argument("--given-name", default="", type=optional)
    enrol.add_argument("--surname", default="", type=optional)
    enrol.add_argument("--key-algorithm", default="", type=optional,
                       help="the account key's (default: the core's, rsa-2048)")
    enrol.add_argument("--csr", type=Path, help="the PKCS#10 request (PEM or DER) made on the holder's card")
    enrol.add_argument("--transaction-limit", type=number(0, MAX_TRANSACTION_LIMIT, "patacas"), default=0,
                       help="qualified certificates: MOP (0: none)")
    enrol.add_argument("--agent-qualification", default="", type=optional, help="qualified certificates")
    enrol.add_argument("--no-recovery-code", action="store_true", help="the holder chose no recovery code")
    enrol.add_argument("--existing-account", action="store_true",
                       help="the account exists: issue the certificate only (asks for no secret)")
    enrol.add_argument("--secrets-fd", type=int, metavar="FD", help=SECRETS_FD_HELP)
    enrol.set_defaults(handler=cmd_enrol)

    commands.add_parser(
        "pending-enrolments", help="enrolments the RA did not finish recording (finish each with enrol "
                                   "--existing-account)",
        description="An enrolment is recorded as pending before the core makes the account, and finished when "
                    "the RA has recorded the holder. One left here (the RA's database failed, the command was "
                    "stopped) may have its account in the core: enrol --existing-account with the holder's data "
                    "finishes it.").set_defaults(handler=cmd_pending_enrolments)

    unlock = commands.add_parser("unlock", help="unlock an account in person with the holder's recovery code",
                                 description="Asks for the holder's recovery code and the new password (twice); "
                                             "prints the holder's new recovery code once.")
    unlock.add_argument("account", type=text(MAX_ACCOUNT))
    unlock.add_argument("--secrets-fd", type=int, metavar="FD", help=SECRETS_FD_HELP)
    unlock.set_defaults(handler=cmd_unlock)

    revoke = commands.add_parser("revoke", help="revoke a certificate on the operator's decision")
    revoke.add_argument("serial", type=text(MAX_SERIAL))
    revoke.add_argument("--reason", required=True, choices=REASONS)
    revoke.set_defaults(handler=cmd_revoke)

    by_holder = commands.add_parser("revoke-by-holder", help="revoke a certificate for its holder, who gives the "
                                                             "revocation phrase (asked for)")
    by_holder.add_argument("serial", type=text(MAX_SERIAL))
    by_holder.add_argument("--account", required=True, type=text(MAX_ACCOUNT), help="the holder's account")
    by_holder.add_argument("--reason", default="unspecified", choices=REASONS)
    by_holder.add_argument("--secrets-fd", type=int, metavar="FD", help=SECRETS_FD_HELP)
    by_holder.set_defaults(handler=cmd_revoke_by_holder)

    listing = commands.add_parser("certificates", help="the core's certificates")
    listing.add_argument("--account", default="", type=text(MAX_ACCOUNT, required=False))
    listing.add_argument("--expiring-within", type=number(0, MAX_DAYS, "a number of days"), default=0,
                         metavar="DAYS",
                         help="only valid certificates expiring within DAYS")
    listing.add_argument("--status", choices=("valid", "expired", "revoked"))
    listing.set_defaults(handler=cmd_certificates)

    search = commands.add_parser("search", help="registered holders by part of the account, name or e-mail, "
                                                "with their certificates")
    search.add_argument("text", type=text(MAX_TEXT))
    search.set_defaults(handler=cmd_search)


def _identity_arguments(parser, *, id_type_help: str, name_help: str | None) -> None:
    """The holder's registered identity data, as `holder` and `enrol` take them."""
    parser.add_argument("account", type=text(MAX_ACCOUNT))
    parser.add_argument("--id-type", required=True, type=text(MAX_ID_TYPE), help=id_type_help)
    parser.add_argument("--id-number", required=True, type=text(MAX_ID_NUMBER))
    parser.add_argument("--name", required=True, type=text(MAX_NAME), help=name_help)
    parser.add_argument("--birth-date", required=True, type=datetime.date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--email", action="append", required=True, type=email,
                        help="an address on the certificates (repeat)")


def _user() -> str:
    """The operator's name by default: $SIGNSERVER_RA_OPERATOR, else the user's ("" when the
    system knows no name for the user: a command that records one then asks for --operator)."""
    try:
        return os.environ.get("SIGNSERVER_RA_OPERATOR") or getpass.getuser()
    except (KeyError, OSError):
        return ""


def _workflow(settings, *, core: bool = False):
    """The renewal workflow; ``core``: for a command that asks the core, whose client files are
    read first (SettingsError when they cannot be: the settings, not the core, are at fault).

    Raises: SettingsError, StoreUnavailable."""
    from signserver.clock import SystemClock
    from signserver.ra import server
    from signserver.ra.workflow import RenewalWorkflow

    certificates = server.certificate_client(settings) if core else server.CoreConnection(settings)
    database = server.open_database(settings)
    return RenewalWorkflow(database, SystemClock(), settings,
                           registry=server.CoreConnection(settings, server.registry_client),
                           certificates=certificates)


def _operations(settings):
    """The operator's operations, the core's client files read first.

    Raises: SettingsError, StoreUnavailable."""
    from signserver.clock import SystemClock
    from signserver.ra import server
    from signserver.ra.operations import RaOperations

    certificates = server.certificate_client(settings)
    return RaOperations(server.open_database(settings), SystemClock(), certificates)


class TypedSecrets(SecretInput):
    """SecretInput, with a secret typed at a terminal in another encoding than UTF-8 (getpass
    raises UnicodeDecodeError) refused in one line before anything is done."""

    def ask(self, what: str) -> str:
        """Raises: OperationRefused: as SecretInput.ask, or not UTF-8 text."""
        try:
            return super().ask(what)
        except UnicodeDecodeError:
            raise OperationRefused(f"{what} is not valid UTF-8 text (check the terminal's encoding); "
                                   "nothing was changed") from None


def secret_input(fd: int | None) -> SecretInput:
    """The secrets of a command: from ``fd`` (--secrets-fd), else typed at the terminal."""
    return TypedSecrets(fd)


def _secrets(args):
    return secret_input(args.secrets_fd)


def _print(args, value, lines) -> None:
    if args.json:
        print(json_text(value, indent=2))
    else:
        for line in lines:
            print(line)


def _renewal_lines(renewals) -> list[str]:
    return [f"{r['id']}  {r['serial']}  {r['account']}  {r['profile']}  {r['state']}  expires {r['expires'][:10]}"
            + (f"  {r['help_code']}" if r["help_code"] else "") for r in renewals] or ["(none)"]


def cmd_serve(args, settings) -> int:
    from signserver.ra.server import serve

    serve(settings, demo=args.demo)
    return 0


def cmd_holder(args, settings) -> int:
    from signserver.ra.operations import holder_view

    holder = Holder(args.account, args.id_type, args.id_number, args.name, args.birth_date, tuple(args.email))
    _workflow(settings).register_holder(holder, args.operator)
    _print(args, {**holder_view(holder), "registered": True}, [f"holder {args.account} registered"])
    return 0


def cmd_confirm(args, settings) -> int:
    from signserver.ra.workflow import view

    renewal = view(_workflow(settings, core=True).confirm_renewal(args.serial, args.operator))
    _print(args, renewal, [f"renewal {renewal['id']} of {renewal['serial']}: {renewal['state']}"])
    return 0


def cmd_resend_notice(args, settings) -> int:
    from signserver.ra.workflow import view

    renewal = view(_workflow(settings).resend_notice(args.renewal_id, args.operator))
    _print(args, renewal, [f"renewal {renewal['id']}: the notice was queued again with a new access key"])
    return 0


def cmd_reopen_limits(args, settings) -> int:
    from signserver.ra.workflow import view

    renewal = view(_workflow(settings).reopen_limits(args.renewal_id, args.operator))
    _print(args, renewal, [f"renewal {renewal['id']}: its limits start again ({renewal['state']})"])
    return 0


def cmd_renewals(args, settings) -> int:
    from signserver.ra.workflow import view

    states = tuple(State(s) for s in args.state or ())
    renewals = [view(r) for r in _workflow(settings).renewals(states, args.account)]
    _print(args, renewals, _renewal_lines(renewals))
    return 0


def cmd_in_person(args, settings) -> int:
    args.state, args.account = [State.AWAITING_IN_PERSON.value], ""
    return cmd_renewals(args, settings)


def cmd_complete(args, settings) -> int:
    from signserver.ra.workflow import view

    csr = _read_csr(args.csr)
    renewal = view(_workflow(settings, core=True).complete_in_person(args.renewal_id, args.operator, csr))
    _print(args, renewal, [f"renewal {renewal['id']}: {renewal['state']}; new certificate {renewal['new_serial']}, "
                           f"valid until {renewal['new_expires'][:10]}"])
    return 0


def _read_csr(path: Path | None) -> bytes | None:
    """The certificate request in ``path`` (PEM or DER), checked before anything is done: a file
    that is not one would otherwise be refused by the core only once an enrolment had made the
    holder's account.

    Raises: OperationRefused ("csr_unreadable"): the file cannot be read, or is not a PKCS#10
            request."""
    from cryptography import x509

    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OperationRefused(f"cannot read the CSR {path} ({exc.strerror})", reason="csr_unreadable") from None
    load = x509.load_pem_x509_csr if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_csr
    try:
        load(data)
    except ValueError:
        raise OperationRefused(f"{path} is not a certificate request (PKCS#10, PEM or DER)",
                               reason="csr_unreadable") from None
    return data


def cmd_notices(args, settings) -> int:
    sent = _workflow(settings).run_notices()
    _print(args, {"notices": sent}, [f"{sent} notice(s) queued"])
    return 0


def _outbox_view(message: dict) -> dict:
    return {**message, **{key: message[key] and message[key].isoformat()
                          for key in ("created_at", "next_attempt_at", "given_up_at", "dismissed_at")}}


def cmd_outbox(args, settings) -> int:
    from signserver.clock import SystemClock
    from signserver.ra import server
    from signserver.ra.operations import RaOperations
    from signserver.ra.store import repository

    database = server.open_database(settings)
    if args.dismiss is not None:
        done = _outbox_view(RaOperations(database, SystemClock(), server.CoreConnection(settings))
                            .dismiss_email(args.dismiss, args.operator))
        _print(args, done, [f"e-mail {done['id']} to {done['recipient']}: marked dealt with; it no longer counts "
                            "on the dashboard"])
        return 0
    with database.transaction() as conn:
        unsent = repository.unsent_emails(conn)
    shown = [_outbox_view(m) for m in unsent]
    _print(args, shown, [f"{m['id']}  {m['recipient']}  queued {m['created_at'][:16]}  {m['attempts']} attempt(s)  "
                         + (f"given up {m['given_up_at'][:16]}" if m["given_up_at"] else
                            f"next {m['next_attempt_at'][:16]}") + f"  {m['subject']}"
                         + (f"\n    renewal {m['renewal_id']} of {m['account'] or '-'}" if m["renewal_id"] else "")
                         + (f"\n    last error: {m['last_error']}" if m["last_error"] else "")
                         + (f"\n    dealt with by {m['dismissed_by']} at {m['dismissed_at'][:16]}"
                            if m["dismissed_at"] else "") for m in shown]
           or ["(none)"])
    return 0


def _certificate_lines(certificates) -> list[str]:
    return [f"{c['serial']}  {c['account'] or '-'}  {c['profile']}  {c['status']}  "
            f"until {(c['not_after'] or '')[:10]}  {c['subject']}" for c in certificates] or ["(none)"]


def cmd_enrol(args, settings) -> int:
    from signserver.ra.operations import Enrolment, EnrolmentSecrets, check_enrolment

    csr = _read_csr(args.csr)
    enrolment = Enrolment(
        holder=Holder(args.account, args.id_type, args.id_number, args.name, args.birth_date, tuple(args.email)),
        profile=args.profile, kind=args.kind, organisation=args.organisation, department=args.department,
        title=args.title, given_name=args.given_name, surname=args.surname, key_algorithm=args.key_algorithm,
        csr=csr, transaction_limit=args.transaction_limit, agent_qualification=args.agent_qualification,
        recovery_code=not args.no_recovery_code, existing_account=args.existing_account)
    check_enrolment(enrolment)
    secrets = EnrolmentSecrets()
    if not args.existing_account:
        asked = _secrets(args)
        password, confirmation = asked.ask_new("the holder's new password")
        phrase = asked.ask_optional("the holder's revocation phrase")
        if phrase and args.secrets_fd is None and asked.ask("the revocation phrase again") != phrase:
            raise OperationRefused("the revocation phrase and its confirmation differ")
        secrets = EnrolmentSecrets(password=password, confirmation=confirmation, revocation_phrase=phrase)
    # Ctrl-C is held from before the core makes the account until its one-time secrets are
    # printed: interrupted in between, they would be lost with the account made.
    with interrupts_held("signserver ra: interrupted; the enrolment finishes first, so that the holder's "
                         "secrets are printed"):
        enrolled = _operations(settings).enrol(enrolment, secrets, args.operator)
        return _print_enrolled(args, settings, enrolled)


def _print_enrolled(args, settings, enrolled) -> int:
    from signserver.ra.operations import certificate_view

    certificate = certificate_view(enrolled.certificate) if enrolled.certificate else None
    if certificate:
        lines = [f"account {enrolled.account} enrolled; certificate {certificate['serial']} "
                 f"({certificate['profile']}), valid until {(certificate['not_after'] or '')[:10]}"]
    elif enrolled.refusal_reason == "store_unavailable":
        lines = [f"account {enrolled.account} created in the core, but the RA did not record it: "
                 f"{enrolled.refusal}"]
    else:
        lines = [f"account {enrolled.account} created, but the certificate was refused: {enrolled.refusal}; "
                 "once that is put right, issue it with --existing-account"]
    if enrolled.otp_uri:
        lines.append(f"OTP URI, shown once (the holder adds it to the OTP app): {enrolled.otp_uri}")
    if enrolled.recovery_code:
        lines.append(f"recovery code, shown once (for the holder only): {enrolled.recovery_code}")
    value = {"account": enrolled.account, "credential_id": enrolled.credential_id, "certificate": certificate,
             "otp_uri": enrolled.otp_uri, "recovery_code": enrolled.recovery_code, "reference": enrolled.reference}
    if not certificate:
        value.update(error="operation_refused", message=enrolled.refusal, reason=enrolled.refusal_reason,
                     help_code=enrolled.help_code,
                     guidance=_guidance(enrolled.help_code, args.lang, settings.provider_name))
    _print(args, value, lines)
    sys.stdout.flush()
    if not certificate:
        guidance = _guidance(enrolled.help_code, args.lang, settings.provider_name)
        if enrolled.refusal_reason == "store_unavailable":
            print(f"signserver ra: {enrolled.refusal}", file=sys.stderr)
        else:
            print(f"signserver ra: the certificate was refused: {enrolled.refusal}", file=sys.stderr)
        if guidance:
            print(guidance, file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_pending_enrolments(args, settings) -> int:
    pending = [{**p, "created_at": p["created_at"].isoformat()} for p in _operations(settings).pending_enrolments()]
    _print(args, pending, [f"{p['account']}  {p['profile']}  since {p['created_at'][:16]}  by {p['operator']}  "
                           f"reference {p['reference']}" for p in pending] or ["(none)"])
    return 0


def cmd_unlock(args, settings) -> int:
    asked = _secrets(args)
    recovery_code = asked.ask("the holder's recovery code")
    password, confirmation = asked.ask_new("the holder's new password")
    unlocked = _operations(settings).unlock(args.account, recovery_code, password, confirmation, args.operator)
    lines = [f"account {args.account} unlocked, with the new password"]
    if unlocked.recovery_code:
        lines.append(f"new recovery code, shown once (for the holder only): {unlocked.recovery_code}")
    if unlocked.not_recorded:
        lines.append(f"the RA's database did not record the unlock: the core's audit log has it, reference "
                     f"{unlocked.reference}")
    _print(args, {"account": args.account, "unlocked": True, "recovery_code": unlocked.recovery_code,
                  "recorded": not unlocked.not_recorded, "reference": unlocked.reference}, lines)
    return 0


def cmd_revoke(args, settings) -> int:
    from signserver.ra.operations import certificate_view

    revoked = certificate_view(_operations(settings).revoke(args.serial, args.reason, args.operator))
    _print(args, revoked, [f"certificate {revoked['serial']} revoked ({revoked['revocation_reason']})"])
    return 0


def cmd_revoke_by_holder(args, settings) -> int:
    from signserver.ra.operations import certificate_view

    phrase = _secrets(args).ask("the holder's revocation phrase")
    revoked = certificate_view(_operations(settings).revoke_by_holder(args.serial, args.account, phrase,
                                                                      args.operator, args.reason))
    _print(args, revoked, [f"certificate {revoked['serial']} revoked by its holder ({revoked['revocation_reason']})"])
    return 0


def cmd_certificates(args, settings) -> int:
    from signserver.ra.operations import certificate_view

    pages = _operations(settings).certificate_pages(args.account, args.expiring_within, args.status or "")
    # Printed as the core's pages come (every account's certificates may be a million), in the
    # form _print gives a list.
    certificates = (certificate_view(c) for page in pages for c in page)
    if not args.json:
        printed = False
        for certificate in certificates:
            print(_certificate_lines([certificate])[0])
            printed = True
        if not printed:
            print("(none)")
        return 0
    array = JsonArrayWriter(sys.stdout)
    try:
        array.write_all(certificates)
    except BaseException:
        # A later page failed (the core stopped, Ctrl-C): standard output stays one JSON value,
        # the certificates printed in their closed array; the failure is told on standard error
        # and by the exit status.
        args.json_printed = array.started
        raise
    return 0


def cmd_search(args, settings) -> int:
    from signserver.ra.operations import certificate_view, holder_view

    found = [{**holder_view(f.holder), "certificates": [certificate_view(c) for c in f.certificates]}
             for f in _operations(settings).search(args.text, args.operator)]
    lines = []
    for holder in found:
        lines.append(f"{holder['account']}  {holder['name']}  {', '.join(holder['emails'])}")
        lines += [f"    {line}" for line in _certificate_lines(holder["certificates"])]
    _print(args, found, lines or ["(none)"])
    return 0


def cmd_audit(args, settings) -> int:
    from signserver.ra.store import repository

    database = _workflow(settings)._database
    with database.transaction() as conn:
        entries = repository.audit_entries(conn, args.renewal)
        broken = repository.verify_trail(conn)
    _print(args, {"entries": entries, "chain_intact": broken is None, "first_broken_entry": broken},
           [f"{e['id']}  {datetime.datetime.fromtimestamp(e['at'], datetime.timezone.utc):%Y-%m-%d %H:%M:%S}  "
            f"{e['actor']}  {e['action']}  {e['renewal_id']}  {e['detail']}" for e in entries]
           + ["chain intact" if broken is None else f"chain broken at entry {broken}"])
    if broken is not None:
        print(f"signserver ra: the audit trail's chain is broken at entry {broken}: an entry was changed or "
              "removed", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _guidance(code: str, language: str, provider: str = "") -> str:
    """A help code's guidance in ``language``, with the code, naming ``provider`` (ra.provider_name);
    "" for none or one not of the documents."""
    return HELP_CODES[code].text(language, provider) if code in HELP_CODES else ""


def _print_error(args, exc: RaError, provider: str = "") -> None:
    """One line on standard error, and a help code's guidance in the operator's language under it;
    with --json, the same as a JSON object on standard output too, with the refusal's stable
    reason (errors.Refusal.reason, "" when none) for a script to act on; not when the command
    printed its JSON value before it failed (``args.json_printed``): a second value would make
    standard output no JSON at all."""
    code = getattr(exc, "help_code", "") or ""
    guidance = _guidance(code, args.lang, provider)
    print(f"signserver ra: {exc}" + (f" ({code})" if code and not guidance else ""), file=sys.stderr)
    if guidance:
        print(guidance, file=sys.stderr)
    if args.json and not getattr(args, "json_printed", False):  # set by cmd_certificates
        name = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(exc).__name__).lstrip("_")
        print(json_text({"error": name, "message": str(exc), "reason": getattr(exc, "reason", "") or "",
                          "help_code": code, "guidance": guidance}, indent=2))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or the command line refused (argparse said why)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    provider = ""  # named in a help code's guidance, once the settings are read
    try:
        settings = load_settings(args.config)
        provider = settings.provider_name
        if args.command not in UNNAMED_COMMANDS:
            args.operator = settings.check_operator(args.operator)
        return args.handler(args, settings)
    except SettingsError as exc:
        _print_error(args, exc, provider)
        return EXIT_CONFIG
    except CoreUnavailable as exc:  # where it was looked for: a wrong address, or a core stopped
        _print_error(args, CoreUnavailable(f"{exc} (the core at {settings.core_address}, ra.core_address)"), provider)
        return EXIT_ERROR
    except RaError as exc:
        _print_error(args, exc, provider)
        return EXIT_ERROR
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("signserver ra: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
