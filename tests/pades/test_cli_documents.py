"""`signserver sign-pdf` against a running server, and `signserver verify-pdf`."""

from __future__ import annotations

import json

import pytest

from signserver.pades.sample import sample_pdf
from tests import cli_forkserver
from tests.conftest import PASSWORD, SIGNSERVER, cli_env
from tests.grpc_api.conftest import ServerThread


@pytest.fixture(scope="module")
def running(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("cli-document-app", otp_required=False)
    with ServerThread(config, service) as server:
        yield server, api_key, created, service


def test_sign_then_verify(running, state_dir, tmp_path):
    server, api_key, created, service = running
    source = tmp_path / "in.pdf"
    source.write_bytes(sample_pdf(3))
    env = cli_env(state_dir, SIGNSERVER_API_KEY=api_key, SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD,
                  SIGNSERVER_DATABASE_URL=service.database.url)
    signed = cli_forkserver.run([str(SIGNSERVER), "sign-pdf", str(source), str(tmp_path / "out.pdf"), "--no-otp",
                                 "--address", f"localhost:{server.port}", "--ca", str(server.config.tls.cert_file),
                                 "--account", created.account.username, "--credential", created.credential.id,
                                 "--level", "B-T", "--reason", "Aprovado", "--page", "1"],
                                env=env, capture_output=True, text=True, timeout=120)
    assert signed.returncode == 0, signed.stderr
    report = cli_forkserver.run([str(SIGNSERVER), "verify-pdf", str(tmp_path / "out.pdf"), "--json"], env=env,
                                capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    verdict = json.loads(report.stdout)
    assert verdict["verdict"] is True and verdict["reason"]
    assert verdict["signatures"][0]["level"] == "B-T" and verdict["signatures"][0]["trusted"]

    refused = cli_forkserver.run([str(SIGNSERVER), "sign-pdf", str(source), str(tmp_path / "never.pdf"), "--no-otp",
                                  "--address", f"localhost:{server.port}", "--ca", str(server.config.tls.cert_file),
                                  "--account", created.account.username, "--credential", created.credential.id,
                                  "--page", "9"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr and "out of range" in refused.stderr
    assert not (tmp_path / "never.pdf").exists() and not list(tmp_path.glob("*.part"))
    unsigned = cli_forkserver.run([str(SIGNSERVER), "verify-pdf", str(source)], env=env, capture_output=True, text=True)
    assert unsigned.returncode == 1 and "no signatures" in unsigned.stdout
    assert "document: NOT VALID: the document has no signatures" in unsigned.stdout
