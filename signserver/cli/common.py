"""What several command groups share: opening the service with the PIN from its sources."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signserver.cli.pins import read_pin
from signserver.config import USER_PIN_ENV, Config

if TYPE_CHECKING:
    from signserver.service import SignService


def open_service(args, config: Config, with_database: bool = False) -> SignService:
    """The service on the configured (or ``--module``/``--token``) token; with ``with_database``,
    the database schema brought up to date first.

    Raises: ConfigurationError, InvalidArgument (no PIN).
    """
    from signserver.service import SignService  # the whole domain: not for --help or `hsm init`

    pin = read_pin("user PIN", USER_PIN_ENV, getattr(args, "pin_file", None), fallback_file=config.hsm.user_pin_file)
    service = SignService.from_config(config, user_pin=pin, module=getattr(args, "module", None),
                                      token_label=getattr(args, "token", None))
    if with_database:
        service.prepare_database()
    return service
