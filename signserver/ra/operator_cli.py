"""`signserver ra operator add | list | disable | reset-password`: the accounts operators sign in
to the operators' pages with (a password and a one-time password). The new operator's password
is typed twice at a prompt that does not echo, or read once from a file descriptor (--secrets-fd);
the OTP URI is printed once, with a QR code for the operator's authenticator app. Disabling an
account or resetting its password ends the operator's sessions on the pages. Errors are
turned into messages by signserver/ra/cli.py, like every RA command's."""

from __future__ import annotations

import argparse
import io

from signserver.ra.errors import OperatorAccountRefused
from signserver.ra.help_codes import LANGUAGES
from signserver.terminal_text import json_text

SECRETS_FD_HELP = ("read the new password from this file descriptor, one line (default: typed twice at "
                   "the terminal)")


def add_commands(commands) -> None:
    """Add `operator ...` to the RA's commands (``commands``: its subparsers)."""
    from signserver.ra.cli import MAX_ACCOUNT, text  # the RA's command line, which calls this

    operator = commands.add_parser("operator", help="the operators' accounts for the operators' pages",
                                   description="Accounts RA operators sign in to the operators' pages with: a "
                                               "name, a password and a one-time password from an authenticator "
                                               "app. (An operator with an RA client certificate needs none.)")
    actions = operator.add_subparsers(dest="operator_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add an operator account; prints its OTP URI and QR code once",
                             description="Asks for the new operator's password twice (8 characters or more, a "
                                         "letter and a non-letter), then prints the OTP URI and its QR code: "
                                         "the operator scans it into an authenticator app. It is not shown again.")
    add.add_argument("name")
    add.add_argument("--secrets-fd", type=int, metavar="FD", help=SECRETS_FD_HELP)
    add.set_defaults(handler=cmd_add)

    actions.add_parser("list", help="the operator accounts").set_defaults(handler=cmd_list)

    disable = actions.add_parser("disable", help="disable an operator account (for good)")
    disable.add_argument("name")
    disable.set_defaults(handler=cmd_disable)

    reset = actions.add_parser("reset-password", help="a new password and a new OTP seed for an operator",
                               description="Asks for the new password twice; prints the new OTP URI and QR code "
                                           "once (the old authenticator entry stops working). Ends a lock.")
    reset.add_argument("name")
    reset.add_argument("--secrets-fd", type=int, metavar="FD", help=SECRETS_FD_HELP)
    reset.set_defaults(handler=cmd_reset_password)

    for action in actions.choices.values():
        # As every RA command has them; given after the action too. SUPPRESS: absent here, the
        # value given before the action (or its default) stands.
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        action.add_argument("--operator", default=argparse.SUPPRESS, type=text(MAX_ACCOUNT, required=False),
                            help="your name in the audit trail (default: $SIGNSERVER_RA_OPERATOR or the user)")
        action.add_argument("--lang", choices=LANGUAGES, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _accounts(settings):
    """The operator accounts, ending an operator's sessions on the pages when the account is
    disabled or its password reset (the pages' sessions are in the RA's database)."""
    from signserver.clock import SystemClock
    from signserver.ra import server
    from signserver.ra.operator_accounts import OperatorAccounts
    from signserver.ra.web.sessions import SessionStore

    database, clock = server.open_database(settings), SystemClock()
    return OperatorAccounts.from_settings(settings, database, clock, SessionStore(database, clock, settings))


def _new_password(args) -> str:
    """Raises: OperatorAccountRefused (typed twice differently), OperationRefused (cannot be read)."""
    from signserver.ra.cli import secret_input

    password, confirmation = secret_input(args.secrets_fd).ask_new("the operator's new password")
    if password != confirmation:
        raise OperatorAccountRefused("the password and its confirmation differ")
    return password


def _print(args, value, lines) -> None:
    if args.json:
        print(json_text(value, indent=2))
    else:
        for line in lines:
            print(line)


def _shown_once(args, name: str, uri: str, done: str) -> None:
    _print(args, {"name": name, "otp_uri": uri},
           [done, "OTP URI, shown once (scan the QR code or type the URI into the authenticator app):", uri, "",
            qr_terminal(uri)])


def cmd_add(args, settings) -> int:
    accounts = _accounts(settings)  # a bad secret key stops the command before the password is asked
    uri = accounts.add(args.name, _new_password(args), args.operator)
    _shown_once(args, args.name, uri, f"operator {args.name} added")
    return 0


def cmd_reset_password(args, settings) -> int:
    accounts = _accounts(settings)
    uri = accounts.reset_password(args.name, _new_password(args), args.operator)
    _shown_once(args, args.name, uri, f"operator {args.name}: new password and OTP seed")
    return 0


def cmd_disable(args, settings) -> int:
    _accounts(settings).disable(args.name, args.operator)
    _print(args, {"name": args.name, "disabled": True}, [f"operator {args.name} disabled"])
    return 0


def cmd_list(args, settings) -> int:
    def moment(value):
        return value.isoformat() if value else None

    found = [{"name": a.name, "status": a.status, "created_at": moment(a.created_at), "created_by": a.created_by,
              "disabled_at": moment(a.disabled_at), "locked_until": moment(a.locked_until), "failures": a.failures}
             for a in _accounts(settings).list()]
    lines = [f"{a['name']}  {a['status']}" + (f" until {a['locked_until'][:16]}" if a["locked_until"] else "")
             + f"  added {a['created_at'][:10]} by {a['created_by']}" for a in found]
    _print(args, found, lines or ["(none)"])
    return 0


def qr_terminal(uri: str) -> str:
    """The URI as a QR code drawn with block characters (dark on a light terminal or light on a
    dark one: the quiet zone is drawn too)."""
    import qrcode

    code = qrcode.QRCode(border=2)
    code.add_data(uri)
    buffer = io.StringIO()
    code.print_ascii(out=buffer, invert=True)
    return buffer.getvalue()

