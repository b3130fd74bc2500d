"""``signserver account ...`` and ``signserver app ...``: signers' accounts and the applications
that serve them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509

from signserver.accounts import otp
from signserver.accounts.model import Account, AccountKind, Application
from signserver.cli.common import check_output, open_service, write_output
from signserver.cli.output import print_fields, print_json, print_table, to_plain
from signserver.cli.pins import read_pin
from signserver.cli.text import ask, text_argument
from signserver.config import Config
from signserver.errors import InvalidArgument, SignServerError
from signserver.hsm.algorithms import KeyAlgorithm

# The account manager, the application registry and the outbox load SQLAlchemy: the commands import
# what they need of them, so that building the parser (every command's --help) does not.

PASSWORD_ENV = "SIGNSERVER_ACCOUNT_PASSWORD"
RECOVERY_ENV = "SIGNSERVER_ACCOUNT_RECOVERY_CODE"
PHRASE_ENV = "SIGNSERVER_ACCOUNT_REVOCATION_PHRASE"
OPERATOR = "operator:cli"


def _key_algorithm(text: str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm.parse(text)
    except SignServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(subparsers) -> None:
    account = subparsers.add_parser("account", help="signers' accounts", allow_abbrev=False)
    commands = account.add_subparsers(dest="account_command", required=True, metavar="COMMAND")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON instead of a table")
    json_flag.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")

    def command(name, handler, help):
        parser = commands.add_parser(name, help=help, parents=[json_flag], allow_abbrev=False)
        parser.set_defaults(handler=handler)
        return parser

    p = command("create", cmd_create, "create an account with a signing key, OTP seed and recovery code")
    p.add_argument("username", type=text_argument)
    p.add_argument("--name", required=True, type=text_argument, help="the holder's name, as on the signature stamp")
    _holder_name_flags(p)
    p.add_argument("--email", required=True, action="append", type=text_argument,
                   help="an e-mail address (repeat for more)")
    p.add_argument("--kind", choices=[k.value for k in AccountKind], default="personal")
    p.add_argument("--organisation", default="", type=text_argument)
    p.add_argument("--department", default="", type=text_argument)
    p.add_argument("--title", default="", type=text_argument)
    p.add_argument("--key-algorithm", type=_key_algorithm, default=KeyAlgorithm.RSA_2048,
                   help="the signing key's algorithm (default rsa-2048)")
    p.add_argument("--qr-png", type=Path, help="also write the OTP QR code to this PNG file")
    p.add_argument("--revocation-phrase", action="store_true",
                   help=f"also set a revocation phrase (from ${PHRASE_ENV} or a prompt)")
    p.add_argument("--no-recovery-code", action="store_true",
                   help="the holder chose no recovery code: a forgotten password then leaves the holder's keys "
                        "unusable for good (reset-password, and new certificates)")

    p = command("update", cmd_update, "change the holder's names (certificates issued later carry them)")
    p.add_argument("username", type=text_argument)
    p.add_argument("--name", type=text_argument, help="the holder's name, as on the signature stamp")
    _holder_name_flags(p)

    p = command("show", cmd_show, "show an account")
    p.add_argument("username", type=text_argument)
    command("list", cmd_list, "list the accounts")

    p = command("unlock", cmd_unlock, "unlock with the holder's recovery code and set a new password")
    p.add_argument("username", type=text_argument)
    p = command("reset-password", cmd_reset_password,
                "set a new password without the recovery code; the holder's keys become unusable")
    p.add_argument("username", type=text_argument)
    p.add_argument("--yes", action="store_true",
                   help="do not ask for confirmation (needed when not run from a terminal)")
    p = command("disable", cmd_disable, "disable an account (its activation tokens are revoked)")
    p.add_argument("username", type=text_argument)
    p = command("enable", cmd_enable, "enable a disabled account")
    p.add_argument("username", type=text_argument)
    p = command("reset-otp", cmd_reset_otp, "give the account a new OTP seed")
    p.add_argument("username", type=text_argument)
    p.add_argument("--qr-png", type=Path, help="also write the OTP QR code to this PNG file")

    app = subparsers.add_parser("app", help="applications allowed to call the signing API", allow_abbrev=False)
    app_commands = app.add_subparsers(dest="app_command", required=True, metavar="COMMAND")
    p = app_commands.add_parser("create", help="register an application; prints its API key once",
                                parents=[json_flag], allow_abbrev=False)
    p.set_defaults(handler=cmd_app_create)
    p.add_argument("name", type=text_argument)
    p.add_argument("--no-otp", action="store_true", help="its users authorise without an OTP")
    p.add_argument("--account", action="append", dest="accounts", type=text_argument,
                   help="an account it may serve (repeat; default: every account)")
    p.add_argument("--client-cert", type=Path, help="a client certificate (PEM) it authenticates with")
    p.add_argument("--no-api-key", action="store_true", help="authenticate with the client certificate only")
    p.add_argument("--two-step-only", action="store_true",
                   help="sign documents only in two steps (prepare, authorise the digest, complete)")
    p = app_commands.add_parser("list", help="list the applications", parents=[json_flag], allow_abbrev=False)
    p.set_defaults(handler=cmd_app_list)


# --- output --------------------------------------------------------------------------------

def _account_rows(accounts: list[Account]) -> list[list]:
    from signserver.notify.outbox import format_time

    return [[a.username, a.holder_name, a.kind.value, a.status.value,
             format_time(a.locked_until) if a.locked_until else "", ", ".join(a.emails)] for a in accounts]


_ACCOUNT_HEADERS = ["ACCOUNT", "HOLDER", "KIND", "STATUS", "LOCKED UNTIL", "E-MAIL"]


def _show_otp(uri: str, qr_png: Path | None) -> None:
    """Print the OTP's QR code and URI; write the PNG to ``qr_png`` (checked before the change)
    too.

    Raises: InvalidArgument: the PNG could not be written after all (the URI is printed before).
    """
    print("\nOTP: scan this with an authenticator app (shown once):\n")
    print(otp.qr_terminal(uri))
    print(uri)
    if qr_png:
        write_output(qr_png, otp.qr_png(uri), private=True)  # the QR code holds the OTP seed
        print(f"(QR code also written to {qr_png})")


def _print_json_with_otp(answer: dict, uri: str, qr_png: Path | None) -> None:
    """Print the --json ``answer`` with the OTP's URI, and write its QR code to ``qr_png``
    (checked before the change) as without --json: the seed is shown only this once.

    Raises: InvalidArgument: the PNG could not be written after all (the answer is printed
        before, with ``qr_png`` null).
    """
    problem = None
    if qr_png:
        try:
            write_output(qr_png, otp.qr_png(uri), private=True)  # the QR code holds the OTP seed
        except InvalidArgument as exc:
            problem = exc
    print_json({**answer, "otp_uri": uri, "qr_png": str(qr_png) if qr_png and problem is None else None})
    if problem is not None:
        raise problem


# --- account commands ----------------------------------------------------------------------

def _holder_name_flags(parser) -> None:
    parser.add_argument("--given-name", type=text_argument,
                        help="the holder's given name(s) as the identity document shows them, "
                             "e.g. \"Weng Sam LUZIA\" or 詠心 (with --surname)")
    parser.add_argument("--surname", type=text_argument,
                        help="the holder's surname as the identity document shows it, e.g. KUAN or 關 "
                             "(with --given-name)")


def cmd_update(args, config: Config) -> int:
    if args.name is None and args.given_name is None and args.surname is None:
        raise InvalidArgument("nothing to change: give --name, or --given-name with --surname")
    service = open_service(args, config, with_database=True)
    account = service.accounts.update_holder(args.username, OPERATOR, holder_name=args.name,
                                             given_name=args.given_name, surname=args.surname)
    if args.json:
        print_json({"account": account})
        return 0
    print_table(_ACCOUNT_HEADERS, _account_rows([account]))
    return 0


def cmd_create(args, config: Config) -> int:
    from signserver.accounts.manager import Enrolment

    check_output(args.qr_png, private=True)
    password = read_pin("password for the account", PASSWORD_ENV, None, confirm=True)
    phrase = read_pin("revocation phrase", PHRASE_ENV, None, confirm=True) if args.revocation_phrase else None
    service = open_service(args, config, with_database=True)
    enrolment = Enrolment(username=args.username, holder_name=args.name, emails=tuple(args.email),
                          kind=AccountKind(args.kind), organisation=args.organisation,
                          department=args.department, title=args.title, given_name=args.given_name or "",
                          surname=args.surname or "", key_algorithm=args.key_algorithm,
                          revocation_phrase=phrase, recovery_by_code=not args.no_recovery_code)
    created = service.accounts.create(enrolment, password, operator=OPERATOR)
    if args.json:
        _print_json_with_otp({"account": created.account, "credential": created.credential,
                              "recovery_code": created.recovery_code}, created.otp_uri, args.qr_png)
        return 0
    print_table(_ACCOUNT_HEADERS, _account_rows([created.account]))
    print(f"\ncredential {created.credential.id} ({created.credential.key_algorithm.value}, key in the HSM)")
    if created.recovery_code:
        print(f"\nRecovery code (give it to the holder; it is shown once): {created.recovery_code}")
    else:
        print("\nNo recovery code: if the holder forgets the password, the holder's keys cannot be recovered")
    _show_otp(created.otp_uri, args.qr_png)
    return 0


def cmd_show(args, config: Config) -> int:
    from signserver.notify.outbox import format_time

    service = open_service(args, config, with_database=True)
    account = service.accounts.get(args.username)
    credentials = service.credentials.list_credentials(_OPERATOR_VIEW, args.username)
    if args.json:
        print_json({"account": account, "credentials": credentials})
        return 0
    print_fields([
        ("account", account.username), ("holder", account.holder_name),
        ("given name", account.given_name or "-"), ("surname", account.surname or "-"), ("kind", account.kind.value),
        ("organisation", account.organisation or "-"), ("department", account.department or "-"),
        ("title", account.title or "-"), ("e-mail", ", ".join(account.emails)), ("status", account.status.value),
        ("locked until", format_time(account.locked_until) if account.locked_until else "-"),
        ("failed attempts", account.failed_attempts),
        ("password changed", format_time(account.password_changed_at)),
        ("created", format_time(account.created_at)),
    ])
    print()
    print_table(["CREDENTIAL", "ALGORITHM", "STATUS", "KEY ID"],
                [[c.id, c.key_algorithm.value, c.status, c.key_id] for c in credentials])
    return 0


def cmd_list(args, config: Config) -> int:
    accounts = open_service(args, config, with_database=True).accounts.list()
    if args.json:
        print_json(accounts)
    else:
        print_table(_ACCOUNT_HEADERS, _account_rows(accounts), empty="no accounts")
    return 0


def cmd_unlock(args, config: Config) -> int:
    code = read_pin("holder's recovery code", RECOVERY_ENV, None)
    password = read_pin("new password for the account", PASSWORD_ENV, None, confirm=True)
    service = open_service(args, config, with_database=True)
    new_code = service.accounts.unlock_with_recovery_code(args.username, code, password, operator=OPERATOR)
    if args.json:
        print_json({"account": args.username, "recovery_code": new_code})
    else:
        print(f"unlocked {args.username} and set the new password")
        print(f"New recovery code (the old one no longer works; shown once): {new_code}")
    return 0


RESET_WARNING = ("the holder's keys (signing data packages) are sealed to the old password and can never sign "
                 "again: their credentials are disabled. The RA must revoke the holder's certificates and "
                 "issue new ones.")


def cmd_reset_password(args, config: Config) -> int:
    if not args.yes and not sys.stdin.isatty():
        # Nobody to ask: a script must say it means it (as `hsm delete` and `hsm init` do).
        raise InvalidArgument(f"resetting the password of {args.username} without its recovery code makes the "
                              "holder's keys unusable for good; nothing was changed: pass --yes to confirm")
    service = open_service(args, config, with_database=True)
    if not args.yes:
        _confirm_reset(service.accounts.get(args.username))
    password = read_pin("new password for the account", PASSWORD_ENV, None, confirm=True)
    new_code = service.accounts.reset_password(args.username, password, operator=OPERATOR)
    if args.json:
        print_json({"account": args.username, "recovery_code": new_code, "warning": RESET_WARNING})
    else:
        print(f"reset the password of {args.username} and cleared its lock")
        print(f"Warning: {RESET_WARNING}")
        print(f"New recovery code (give it to the holder; shown once): {new_code}")
    return 0


def _confirm_reset(account: Account) -> None:
    """Ask the operator at the terminal to type the account's name (on stderr: stdout may be JSON).

    Raises: InvalidArgument: not confirmed (nothing was changed).
    """
    print(f"Resetting the password of {account.username} ({account.holder_name}) without its recovery code: "
          f"{RESET_WARNING}", file=sys.stderr)
    answer = ask("Type the account's name to go on: ")
    if answer is None or answer.strip() != account.username:
        raise InvalidArgument("not confirmed: the account is unchanged")


def _set_status(args, config: Config, enabled: bool) -> int:
    account = open_service(args, config, with_database=True).accounts.set_status(args.username, enabled, OPERATOR)
    if args.json:
        print_json(account)
    else:
        print(f"{account.username} is {account.status.value}")
    return 0


def cmd_disable(args, config: Config) -> int:
    return _set_status(args, config, enabled=False)


def cmd_enable(args, config: Config) -> int:
    return _set_status(args, config, enabled=True)


def cmd_reset_otp(args, config: Config) -> int:
    check_output(args.qr_png, private=True)
    uri = open_service(args, config, with_database=True).accounts.reset_otp(args.username, OPERATOR)
    if args.json:
        _print_json_with_otp({"account": args.username}, uri, args.qr_png)
    else:
        print(f"new OTP seed for {args.username}; the old codes no longer work")
        _show_otp(uri, args.qr_png)
    return 0


# --- application commands ------------------------------------------------------------------

def _fingerprint(path: Path) -> str:
    from signserver.accounts.applications import certificate_fingerprint

    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read a PEM certificate from {path}: {exc}") from None
    return certificate_fingerprint(certificate)


def cmd_app_create(args, config: Config) -> int:
    service = open_service(args, config, with_database=True)
    fingerprint = _fingerprint(args.client_cert) if args.client_cert else None
    app, api_key = service.applications.create(
        args.name, otp_required=not args.no_otp,
        accounts_served=tuple(args.accounts) if args.accounts else None,
        client_certificate_sha256=fingerprint, with_api_key=not args.no_api_key,
        one_call_signing=not args.two_step_only, operator=OPERATOR)
    if args.json:
        print_json({"application": app, "api_key": api_key})
        return 0
    _print_apps([app])
    if api_key:
        print(f"\nAPI key (send it in the x-api-key header over TLS; shown once):\n{api_key}")
    return 0


def _print_apps(apps: list[Application]) -> None:
    print_table(["APPLICATION", "OTP", "ACCOUNTS", "API KEY", "CLIENT CERTIFICATE SHA-256", "STATUS"],
                [[a.name, "required" if a.otp_required else "not required",
                  "all" if a.all_accounts else ", ".join(a.accounts), "yes" if a.has_api_key else "no",
                  a.client_certificate_sha256 or "-", a.status] for a in apps], empty="no applications")


def cmd_app_list(args, config: Config) -> int:
    apps = open_service(args, config, with_database=True).applications.list()
    if args.json:
        print_json([to_plain(a) for a in apps])
    else:
        _print_apps(apps)
    return 0


# Operators see every account's credentials.
_OPERATOR_VIEW = Application(id=0, name="operator", otp_required=True, all_accounts=True, accounts=(),
                             has_api_key=False, client_certificate_sha256=None, status="active")
