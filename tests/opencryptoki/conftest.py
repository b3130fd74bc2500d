"""tests/opencryptoki runs only on openCryptoki's soft token (SIGNSERVER_TEST_TOKEN=opencryptoki)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from signserver.hsm.admin import TokenAdministrator
from tests.conftest import ON_OPENCRYPTOKI, cli_env

# Token flags that say wrong user PINs were tried since the last successful login.
WRONG_TRIES = frozenset({"user PIN locked", "user PIN final try", "user PIN count low"})


def pytest_collection_modifyitems(config, items):
    if ON_OPENCRYPTOKI:
        return
    skip = pytest.mark.skip(reason="runs on openCryptoki's soft token: SIGNSERVER_TEST_TOKEN=opencryptoki "
                                   "(make test-opencryptoki)")
    for item in items:
        if "tests/opencryptoki/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


def flags(config) -> tuple[str, ...]:
    """The test token's flags, in words."""
    return next(s.flags for s in TokenAdministrator(config.hsm.module).slots()
                if s.token_label == config.hsm.token_label)


def clear_wrong_tries(config, state_dir) -> None:
    """When the token reports wrong user PINs, the security officer sets the user PIN again
    (C_InitPIN), which clears them, in a process of its own: openCryptoki refuses an SO login beside
    this process's user login."""
    if not WRONG_TRIES & set(flags(config)):
        return
    subprocess.run([sys.executable, "-c", _UNBLOCK], check=True, timeout=120, env={
        **cli_env(state_dir), "MODULE": str(config.hsm.module), "LABEL": config.hsm.token_label,
        "SO_PIN_FILE": str(state_dir / "hsm" / "so-pin"), "USER_PIN_FILE": str(config.hsm.user_pin_file)})


_UNBLOCK = """
import os
from pathlib import Path
from signserver.hsm.admin import TokenAdministrator
from signserver.secret import Secret
read = lambda name: Secret(Path(os.environ[name]).read_text().strip())
TokenAdministrator(Path(os.environ["MODULE"])).unblock_user_pin(os.environ["LABEL"], read("SO_PIN_FILE"),
                                                                read("USER_PIN_FILE"))
"""
