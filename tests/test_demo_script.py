"""examples/demo.sh: signs through a server at the configured address, on the configured token."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import free_port, have, on_a_free_port, ROOT

# The demo script talks to a server through the command line: the store is not what it tests.
pytestmark = [pytest.mark.one_store,
              pytest.mark.skipif(not (have("pdfsig") and have("pdftoppm")), reason="needs poppler-utils")]


def test_demo_uses_the_configured_address_and_token(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNSERVER", "SOFTHSM2_CONF"))}

    def demo_on(port: int) -> subprocess.CompletedProcess:
        # The demo starts its own server on the address it is given when nothing answers there: a port
        # another test took since free_port looked shows as "address already in use", and
        # on_a_free_port tries another.
        env.update(STATE_DIR=str(state), OUT_DIR=str(out), SIGNSERVER_SERVER_LISTEN=f"127.0.0.1:{port}",
                   SIGNSERVER_HTTP_LISTEN=f"127.0.0.1:{free_port()}", SIGNSERVER_CSC_LISTEN="127.0.0.1:0",
                   SIGNSERVER_HSM_TOKEN_LABEL="demo-token")
        result = subprocess.run([str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, text=True,
                                timeout=300)
        # Something that answered there (the demo would sign through it) is a port taken too.
        assert f"no server on localhost:{port}" in result.stdout, f"address already in use: {result.stdout}"
        log = out / "demo-server.log"
        assert result.returncode == 0, result.stdout + result.stderr + (log.read_text() if log.exists() else "")
        return result

    result = on_a_free_port(demo_on)
    assert "Signature is Valid" in result.stdout and (out / "signed.png").is_file()
    slots = subprocess.run(["softhsm2-util", "--show-slots"], capture_output=True, text=True,
                           env={**env, "SOFTHSM2_CONF": str(state / "softhsm" / "softhsm2.conf")})
    assert "demo-token" in slots.stdout
