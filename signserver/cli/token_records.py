"""The audit records of the HSM administrator's commands that change a token: a key generated or
deleted, a certificate stored beside a key, the key ceremony's export and import.

The database is opened (and its schema brought up to date) before the token is touched: a command
whose change could not be recorded changes nothing, so a configuration without a reachable
database (token administration alone) cannot generate or delete keys unrecorded. The record is
appended once the token's change is made, so that no record claims a key that was never made; when
that append fails, the change stays on the token (it cannot be taken back) and the command says so
loudly on standard error and exits with status 1, so that the operator records it by other means.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from signserver.cli.common import open_service
from signserver.config import Config
from signserver.errors import ConfigurationError, SignServerError

if TYPE_CHECKING:
    from signserver.service import SignService

OPERATOR = "operator:cli"
KEY_GENERATED = "hsm.key_generated"
KEY_DELETED = "hsm.key_deleted"
UNNAMED_KEYS_DELETED = "hsm.unnamed_keys_deleted"
CERTIFICATE_STORED = "hsm.certificate_stored"
KEYS_EXPORTED = "hsm.keys_exported"
KEYS_IMPORTED = "hsm.keys_imported"
UNRECORDED = 1  # the exit status of a command whose token change no audit record says


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

    Raises: nothing.
    """
    try:
        with service.database.transaction() as conn:
            # The token is named: a cluster's tokens share one log, and a key is one token's.
            service.audit.append(conn, service.clock.now(), event, OPERATOR, subject,
                                 token=service.keys.session.token_label, **detail)
    except SignServerError as exc:
        print(f"signserver: WARNING: {done} on the token, but the audit log does not record it ({event}: {exc}); "
              "record it by other means", file=sys.stderr)
        return False
    return True
