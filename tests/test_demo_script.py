"""examples/demo.sh: signs through a server at the configured address, on the configured token."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import free_port, have, ROOT

pytestmark = pytest.mark.skipif(not (have("pdfsig") and have("pdftoppm")), reason="needs poppler-utils")


def test_demo_uses_the_configured_address_and_token(tmp_path):
    state, out, port = tmp_path / "state", tmp_path / "out", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNSERVER", "SOFTHSM2_CONF"))}
    env.update(STATE_DIR=str(state), OUT_DIR=str(out), SIGNSERVER_SERVER_LISTEN=f"127.0.0.1:{port}",
               SIGNSERVER_HTTP_LISTEN=f"127.0.0.1:{free_port()}", SIGNSERVER_CSC_LISTEN="127.0.0.1:0",
               SIGNSERVER_HSM_TOKEN_LABEL="demo-token")
    result = subprocess.run([str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr + (out / "demo-server.log").read_text()
    assert f"no server on localhost:{port}" in result.stdout
    assert "Signature is Valid" in result.stdout and (out / "signed.png").is_file()
    slots = subprocess.run(["softhsm2-util", "--show-slots"], capture_output=True, text=True,
                           env={**env, "SOFTHSM2_CONF": str(state / "softhsm" / "softhsm2.conf")})
    assert "demo-token" in slots.stdout
