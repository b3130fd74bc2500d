"""Shared fixtures: a fresh SoftHSM token for the test session, made by softhsm-setup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from signserver.config import Config, load_config
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
    return SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))


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
