"""A token's first master key, as the server's first start makes it, for the master-key commands'
tests (each on a token and a database of its own)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from signserver.secret import Secret
from signserver.service import SignService
from tests.conftest import database_url


@contextmanager
def service_with_first_master(config, token: str, db: Path, user_pin: Secret) -> Iterator[SignService]:
    """A service on ``token`` and the database at ``db``, which has its first master key."""
    own = replace(config, state_dir=db, database_url=database_url(db / "signserver.db"),
                  hsm=replace(config.hsm, token_label=token))
    service = SignService.from_config(own, user_pin=user_pin)
    try:
        service.prepare_database()
        service.packages.ensure_master()
        yield service
    finally:
        service.close()


def first_master(config, token: str, db: Path, user_pin: Secret) -> None:
    """The master key the server's first start makes, in the database at ``db``."""
    with service_with_first_master(config, token, db, user_pin):
        pass
