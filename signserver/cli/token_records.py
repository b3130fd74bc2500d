"""The audit records of the HSM administrator's commands that change a token: a key generated or
deleted, a certificate stored beside a key, the key ceremony's transport key, export and import;
and, with :func:`record_without_login`, a token initialised and its PINs changed.

The database is opened (and its schema brought up to date) before the token is touched: a command
whose change could not be recorded changes nothing, so a configuration without a reachable
database (token administration alone) cannot generate or delete keys unrecorded. The record is
appended once the token's change is made, so that no record claims a key that was never made; when
that append fails, the change stays on the token (it cannot be taken back) and the command says so
loudly on standard error and exits with status 1, so that the operator records it by other means.

Initialising a token and changing its PINs are never refused for want of a database: a PIN that
may have leaked must change at once, and a node's first token is set up before its database
exists. These are recorded once made, in the database as configured; a SQLite file not made yet
(nothing to record in) is said, a database that cannot be opened or refuses the record is warned
of, with status 1, as above.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from signserver.cli.common import open_service
from signserver.config import Config
from signserver.errors import ConfigurationError, SignServerError
from signserver.interrupts import interrupts_held

if TYPE_CHECKING:
    from signserver.service import SignService

OPERATOR = "operator:cli"
KEY_GENERATED = "hsm.key_generated"
KEY_DELETED = "hsm.key_deleted"
UNNAMED_KEYS_DELETED = "hsm.unnamed_keys_deleted"
CERTIFICATE_STORED = "hsm.certificate_stored"
KEYS_EXPORTED = "hsm.keys_exported"
KEYS_IMPORTED = "hsm.keys_imported"
TRANSPORT_KEY_GENERATED = "hsm.transport_key_generated"
TOKEN_INITIALISED = "hsm.token_initialised"
USER_PIN_CHANGED = "hsm.user_pin_changed"
SO_PIN_CHANGED = "hsm.so_pin_changed"
USER_PIN_UNBLOCKED = "hsm.user_pin_unblocked"  # the security officer set a new user PIN
UNRECORDED = 1  # the exit status of a command whose token change no audit record says
HOLDING_NOTE = "signserver: interrupted; the audit record of what the token did is written first"


def open_recording_service(args, config: Config) -> SignService:
    """The service with its database opened and up to date, before anything changes on the token.

    Raises: ConfigurationError: the database cannot be opened (nothing was changed); as
        open_service.
    """
    service = open_service(args, config)
    unrecorded = ("nothing was changed on the token: this command records what it changes in the audit log, and "
                  "cannot without the database")
    try:
        service.prepare_database()
    except ConfigurationError as exc:
        raise ConfigurationError(exc.key, f"{exc.problem}; {unrecorded}") from None
    return service


def record(service: SignService, event: str, subject: str, done: str, /, **detail: Any) -> bool:
    """Append one record of a change the token has made (``done`` says it, for the warning);
    returns whether it was recorded. A failed append is told on standard error, never raised: the
    change is made and the command's output must still say what it made.

    Raises: KeyboardInterrupt: Ctrl-C came while the record was written (once it is).
    """
    try:
        # A Ctrl-C here would leave the change unrecorded and the database's connection mid-command:
        # it is acted on once the record is written.
        with interrupts_held(HOLDING_NOTE), service.database.transaction() as conn:
            # The token is named: a cluster's tokens share one log, and a key is one token's.
            service.audit.append(conn, service.clock.now(), event, OPERATOR, subject,
                                 token=service.keys.session.token_label, **detail)
    except SignServerError as exc:
        return _unrecorded(f"{done} on the token", event, exc)
    return True


def record_without_login(config: Config, event: str, token: str, done: str, /, **detail: Any) -> bool:
    """:func:`record` for a command that does not log in as the server does (``hsm init``, the
    PIN commands): the database is opened now, after the token's change, without the token. The
    record's subject is the token's label. Returns whether the command may exit 0: recorded, or
    no SQLite file made yet to record in (said on standard error).

    Raises: KeyboardInterrupt: Ctrl-C came while the record was written (once it is).
    """
    from signserver.audit.log import AuditLog  # the database's libraries: not before the change is made
    from signserver.cli.audit import open_database, sqlite_file_not_made
    from signserver.clock import SystemClock

    try:
        missing = sqlite_file_not_made(config)
        if missing is not None:
            print(f"signserver: note: {done}; there is no database at {missing} yet, so the audit log does not "
                  f"record it ({event})", file=sys.stderr)
            return True
        database = open_database(config)
    except SignServerError as exc:
        return _unrecorded(done, event, exc)
    try:
        with interrupts_held(HOLDING_NOTE), database.transaction() as conn:
            AuditLog().append(conn, SystemClock().now(), event, OPERATOR, token, token=token, **detail)
    except SignServerError as exc:
        return _unrecorded(done, event, exc)
    return True


def _unrecorded(done: str, event: str, problem: Exception) -> bool:
    """Say loudly on standard error that ``done`` is not recorded; returns False."""
    print(f"signserver: WARNING: {done}, but the audit log does not record it ({event}: {problem}); record it by "
          "other means", file=sys.stderr)
    return False
