"""One flow on openCryptoki's soft token (RSA and AES-CBC only): `signserver serve` starts, an
account is created, SignHash verifies, a PAdES B-LT document is valid and trusted for pdfsig, and an
audit seal verifies."""

from __future__ import annotations

import hashlib
import json
import subprocess

import grpc
import pytest

from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc, signing_pb2, signing_pb2_grpc
from tests.conftest import on_a_free_port
from tests.grpc_api.serve_process import ServeProcess
from tests.opencryptoki.conftest import clear_wrong_tries
from tests.signing.holders import assert_signed_by

PASSWORD = "Ock-holder-2026"
HOLDER = "ock.holder"


@pytest.fixture(scope="module")
def served(config, state_dir, tmp_path_factory):
    clear_wrong_tries(config, state_dir)  # an earlier test's wrong PINs would keep the server out
    # The certificates name the CA's HTTP endpoints: serve them where the certificates say, so that
    # pdfsig's OCSP request is answered (poppler 22.12 reports a refused connection as "Unknown
    # issue with Certificate" even though NSS treats it as a soft failure).
    folder = tmp_path_factory.mktemp("ock-serve")

    def start_on(port: int) -> ServeProcess:
        http = f"127.0.0.1:{port}"
        return ServeProcess(state_dir, folder, workers=1, SIGNSERVER_HTTP_LISTEN=http,
                            SIGNSERVER_CA_BASE_URL=f"http://{http}").start()
    server = on_a_free_port(start_on)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(served):
    """An application without OTP and a holder with an RSA key and a cloud-signature certificate."""
    made = served.cli("app", "create", "ock-app", "--no-otp")
    assert made.returncode == 0, made.stderr
    credentials = served.client_credentials("ock-app")
    created = served.cli("account", "create", HOLDER, "--name", "Lei Ka Io", "--email", f"{HOLDER}@example.mo",
                         "--kind", "corporate", "--organisation", "Example Lda", "--key-algorithm", "rsa-2048",
                         "--json", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert created.returncode == 0, created.stderr
    issued = served.cli("ca", "issue", HOLDER, "--profile", "cloud-signature-corporate", "--json")
    assert issued.returncode == 0, issued.stderr
    return credentials, json.loads(issued.stdout)["credential_id"]


def channel(served, credentials) -> grpc.Channel:
    return grpc.secure_channel(f"localhost:{served.port}", credentials)


def test_sign_hash_with_an_rsa_holder_key(served, world):
    credentials, credential = world
    digests = [hashlib.sha256(f"page {i}".encode()).digest() for i in range(2)]
    with channel(served, credentials) as open_channel:
        signing = signing_pb2_grpc.SigningServiceStub(open_channel)
        authorization = signing.Authorize(signing_pb2.AuthorizeRequest(
            account=HOLDER, password=PASSWORD, credential_id=credential,
            hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=digests), timeout=60)
        signed = signing.SignHash(signing_pb2.SignHashRequest(
            credential_id=credential, activation_token=authorization.activation_token,
            signature_algorithm="rsa-pkcs1v15-sha256", digests=digests), timeout=60)
        public = signing.GetCredentialInfo(signing_pb2.GetCredentialInfoRequest(credential_id=credential),
                                           timeout=30).public_key
    assert_signed_by(public, list(signed.signatures), digests)


def trusting_nss_database(folder, chain_pem) -> str:
    """An NSS database (what pdfsig reads) that trusts the CA's root, and nothing else."""
    database = folder / "nss"
    database.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{database}", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{database}", "-n", "signserver-ca", "-t", "CT,C,C", "-a",
                    "-i", str(chain_pem)], check=True, capture_output=True)
    return f"sql:{database}"


def test_a_pades_b_lt_document_is_valid_and_trusted_for_pdfsig(served, world, tmp_path):
    credentials, credential = world

    def requests():
        yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
            account=HOLDER, password=PASSWORD, credential_id=credential, level="B-LT"))
        yield document_pb2.SignPdfRequest(chunk=sample_pdf(1))

    with channel(served, credentials) as open_channel:
        replies = list(document_pb2_grpc.DocumentServiceStub(open_channel).SignPdf(requests(), timeout=120))
    signed = b"".join(reply.chunk for reply in replies if reply.WhichOneof("part") == "chunk")
    assert hashlib.sha256(signed).digest() == replies[0].result.sha256
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)

    # The root alone is trusted; the issuing CA comes from the document's own validation data.
    root = tmp_path / "root.pem"
    chain = (served.folder / "ca.pem").read_text()
    root.write_text("-----BEGIN CERTIFICATE-----" + chain.split("-----BEGIN CERTIFICATE-----")[-1])
    report = subprocess.run(["pdfsig", "-nssdir", trusting_nss_database(tmp_path, root), str(path)],
                            capture_output=True, text=True, timeout=60)
    out = report.stdout + report.stderr
    assert "Signature is Valid." in out, out
    assert "Certificate is Trusted." in out, out
    assert "ETSI.CAdES.detached" in out, out


def test_an_audit_seal_is_made_and_the_log_verifies(served, world):
    sealed = served.cli("audit", "seal")
    assert sealed.returncode == 0, sealed.stderr
    verified = served.cli("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
