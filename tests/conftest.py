"""Shared fixtures: a fresh SoftHSM token for the test session, made by softhsm-setup."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from signserver.accounts.manager import Enrolment
from signserver.accounts.model import NewAccount
from signserver.clock import ManualClock
from signserver.config import Config, load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.secret import Secret
from signserver.service import SignService

ROOT = Path(__file__).resolve().parent.parent
SIGNSERVER = Path(sys.executable).parent / "signserver"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    """A state directory with a fresh SoftHSM token labelled 'signserver', for the whole run.

    SOFTHSM2_CONF is set for this process before any test loads the module, so every test
    sees the tokens of this directory and none of the system's.
    """
    state = tmp_path_factory.mktemp("state")
    env = {**os.environ, "SIGNSERVER": str(SIGNSERVER)}
    for name in ("SIGNSERVER_HSM_USER_PIN", "SIGNSERVER_HSM_SO_PIN", "SIGNSERVER_CONFIG"):
        env.pop(name, None)
    subprocess.run([str(ROOT / "softhsm-setup" / "softhsm-setup"), str(state)], env=env, check=True,
                   capture_output=True)
    os.environ["SOFTHSM2_CONF"] = str(state / "softhsm" / "softhsm2.conf")
    return state


@pytest.fixture(scope="session")
def config(state_dir: Path) -> Config:
    return load_config(environ={"SIGNSERVER_STATE_DIR": str(state_dir)})


@pytest.fixture(scope="session")
def service(config: Config) -> SignService:
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    service.prepare_database()
    return service


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc))


def service_with(config: Config, database: Path, clock, **changes) -> SignService:
    """A service on the test token with its own database and clock; ``changes`` replace
    configuration sections (e.g. ``smtp=SmtpConfig(...)``)."""
    config = replace(config, database_url=f"sqlite:///{database}", **changes)
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}), clock=clock)
    service.prepare_database()
    return service


@pytest.fixture
def fresh_service(config, tmp_path, clock) -> SignService:
    """A service with an empty database of its own and a clock the test moves."""
    return service_with(config, tmp_path / "signserver.db", clock)


PASSWORD = "Macau-2017-sign"


def seed_of(otp_uri: str) -> str:
    return parse_qs(urlparse(otp_uri).query)["secret"][0]


def enrol(service: SignService, username: str | None = None, password: str = PASSWORD,
          key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256, **fields) -> tuple[NewAccount, str]:
    """Create an account; returns it and its OTP seed."""
    username = username or f"user{uuid.uuid4().hex[:8]}"
    enrolment = Enrolment(username=username, holder_name=fields.pop("holder_name", "Weng Sam LUZIA KUAN"),
                          emails=fields.pop("emails", (f"{username}@example.mo",)),
                          key_algorithm=key_algorithm, **fields)
    created = service.accounts.create(enrolment, Secret(password), operator="operator:test")
    return created, seed_of(created.otp_uri)


@pytest.fixture(scope="session")
def keystore(service: SignService):
    return service.keys


@pytest.fixture
def label() -> str:
    """A key label no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for running the `signserver` command against the test token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    env.update(SIGNSERVER_STATE_DIR=str(state_dir),
               SOFTHSM2_CONF=str(state_dir / "softhsm" / "softhsm2.conf"), **extra)
    return env


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
