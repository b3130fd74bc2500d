"""Every flow of signserver.client against a real TLS server and token, and its exceptions."""

from __future__ import annotations

import datetime
import hashlib
import io
import subprocess
import sys
import uuid
from dataclasses import replace

import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from signserver.client import (
    AccountLocked,
    ActivationRefused,
    AuthenticationRefused,
    InvalidArgument,
    NotFound,
    PdfOptions,
    SignServerClient,
    Stamp,
)
from signserver.config import TlsConfig
from signserver.grpc_api.tls import ensure_server_certificate
from signserver.pades.sample import sample_pdf
from signserver.v1 import signing_pb2
from tests.conftest import PASSWORD, ROOT
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_client_certificates import issue, pem

WRONG_FACTORS = "authentication failed: the account, password or one-time password is not right"


def verify_ecdsa(public_key_der: bytes, signature: bytes, digest: bytes) -> None:
    """Raises: InvalidSignature."""
    public_key = serialization.load_der_public_key(public_key_der)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_authorize_list_info_and_sign_hashes(world, client):
    account = world.holder.account.username
    messages = [f"order {i}".encode() for i in range(3)]
    digests = [hashlib.sha256(m).digest() for m in messages]
    authorization = client.authorize(account, PASSWORD, digests=digests)  # the holder's signing credential
    assert authorization.credential_id == world.holder.credential.id and authorization.signatures == 3
    assert authorization.expires_at > datetime.datetime.now(datetime.timezone.utc)
    assert authorization.activation_token not in repr(authorization)

    [listed] = client.list_credentials(account, authorization.activation_token)
    assert listed.id == world.holder.credential.id and listed.account == account and listed.status == "active"
    info = client.credential_info(listed.id)
    assert info.credential == listed and "ecdsa-sha256" in info.signature_algorithms

    signatures = client.sign_hashes(authorization, digests[:2], "ecdsa-sha256")
    signatures += client.sign_hashes(authorization, digests[2:], "ecdsa-sha256")
    for digest, signature in zip(digests, signatures, strict=True):
        verify_ecdsa(info.public_key_der, signature, digest)


@pytest.mark.skipif("certificates" not in signing_pb2.CredentialInfo.DESCRIPTOR.fields_by_name,
                    reason="this build's CredentialInfo has no certificates")
def test_credential_info_carries_the_chain(world, client):
    info = client.credential_info(world.holder.credential.id)
    chain = [x509.load_der_x509_certificate(der) for der in info.certificates]
    assert len(chain) >= 2
    assert chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo) == info.public_key_der
    for certificate, issuer in zip(chain, chain[1:]):
        certificate.verify_directly_issued_by(issuer)


def test_sign_pdf_in_one_call_and_verify(world, client, tmp_path):
    source, target = tmp_path / "in.pdf", tmp_path / "signed.pdf"
    source.write_bytes(sample_pdf(1))
    signed = client.sign_pdf(source, target, account=world.holder.account.username, password=PASSWORD,
                             credential_id=world.holder.credential.id,
                             options=PdfOptions(level="B-T", stamp=Stamp(caption="數碼簽署", reason="approval")))
    data = target.read_bytes()
    assert signed.size == len(data) and signed.sha256 == hashlib.sha256(data).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pdf", "signed.pdf"]  # no partial file left
    verification = client.verify_pdf(target)
    assert verification.verdict, verification.reason
    [report] = verification.signatures
    assert report.intact and report.valid and report.trusted and report.level == "B-T"
    assert "Weng Sam LUZIA KUAN" in report.signer


def test_sign_pdf_in_two_steps(world, client):
    account, credential_id = world.holder.account.username, world.holder.credential.id
    prepared = client.prepare_pdf(io.BytesIO(sample_pdf(2)), credential_id=credential_id,
                                  options=PdfOptions(level="B-B", stamp=Stamp(invisible=True)))
    assert len(prepared.digest) == 32 and prepared.credential_id == credential_id
    assert prepared.expires_at > datetime.datetime.now(datetime.timezone.utc)
    authorization = client.authorize_document(prepared, account, PASSWORD)
    output = io.BytesIO()
    signed = client.complete_pdf(prepared, authorization, output)
    assert signed.sha256 == hashlib.sha256(output.getvalue()).digest()
    verification = client.verify_pdf(io.BytesIO(output.getvalue()))
    assert verification.verdict and verification.signatures[0].level == "B-B"
    with pytest.raises(NotFound):  # completed: nothing left to complete
        client.complete_pdf(prepared, authorization, io.BytesIO())


def test_token_for_another_digest_is_an_activation_refusal(world, client):
    account, credential_id = world.holder.account.username, world.holder.credential.id
    prepared = client.prepare_pdf(io.BytesIO(sample_pdf(1)), credential_id=credential_id)
    other = client.authorize(account, PASSWORD, digests=[bytes(32)], credential_id=credential_id)
    with pytest.raises(ActivationRefused) as refused:
        client.complete_pdf(prepared, other, io.BytesIO())
    assert refused.value.code == "PERMISSION_DENIED"


def test_reused_token_is_refused(world, client):
    digest = hashlib.sha256(b"once").digest()
    authorization = client.authorize(world.holder.account.username, PASSWORD, digests=[digest])
    client.sign_hashes(authorization, [digest], "ecdsa-sha256")
    with pytest.raises(ActivationRefused) as refused:
        client.sign_hashes(authorization, [digest], "ecdsa-sha256")
    assert refused.value.code == "PERMISSION_DENIED" and refused.value.reason == "ACTIVATION_REFUSED"


def test_otp_is_passed_and_single_use(world):
    account = world.holder.account.username
    code = pyotp.TOTP(world.otp_seed).now()
    with world.client(world.otp_api_key) as client:
        digest = hashlib.sha256(b"with otp").digest()
        authorization = client.authorize(account, PASSWORD, code, digests=[digest])
        [signature] = client.sign_hashes(authorization, [digest], "ecdsa-sha256")
        verify_ecdsa(client.credential_info(authorization.credential_id).public_key_der, signature, digest)
        with pytest.raises(AuthenticationRefused):  # the same code again
            client.authorize(account, PASSWORD, code, digests=[digest])
    with world.client() as client:  # a success clears the failure counted above
        client.authorize(account, PASSWORD, digests=[digest])


def test_wrong_password_is_an_authentication_refusal(world, client):
    with pytest.raises(AuthenticationRefused) as refused:
        client.authorize(world.holder.account.username, "Wrong-pass-123", digests=[bytes(32)])
    assert refused.value.code == "UNAUTHENTICATED" and refused.value.message == WRONG_FACTORS
    assert refused.value.reason == "AUTHENTICATION_FAILED"
    client.authorize(world.holder.account.username, PASSWORD, digests=[bytes(32)])  # clears the failure


def test_locked_name_tells_when_the_lock_ends(client):
    name = f"nobody-{uuid.uuid4().hex[:8]}"  # an unknown name locks like an account
    for _ in range(5):
        with pytest.raises(AuthenticationRefused):
            client.authorize(name, "Wrong-pass-123", digests=[bytes(32)])
    before = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(AccountLocked) as locked:
        client.authorize(name, "Wrong-pass-123", digests=[bytes(32)])
    error = locked.value
    assert error.code == "FAILED_PRECONDITION" and error.reason == "ACCOUNT_LOCKED"
    assert before + datetime.timedelta(minutes=29) < error.locked_until < before + datetime.timedelta(minutes=31)


def test_application_by_client_certificate(world, config, tmp_path):
    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("Client CA", ca_key, None, ca_key, ca=True)
    certificate = issue("portal.example.mo", ca_key, ca.subject, client_key, ca=False)
    (tmp_path / "client-ca.pem").write_bytes(pem(ca))
    tls = TlsConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server-key.pem",
                    client_ca_file=tmp_path / "client-ca.pem", explicit=False)
    ensure_server_certificate(tls, "127.0.0.1")
    fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    world.service.applications.create("client-cert-app", client_certificate_sha256=fingerprint,
                                      with_api_key=False, otp_required=False)
    digest = hashlib.sha256(b"by certificate").digest()
    with ServerThread(replace(config, tls=tls), world.service) as server, SignServerClient(
            f"127.0.0.1:{server.port}", root_certificates=tls.cert_file.read_bytes(),
            client_certificate=pem(certificate), client_key=pem(client_key)) as client:
        authorization = client.authorize(world.holder.account.username, PASSWORD, digests=[digest])
        [signature] = client.sign_hashes(authorization, [digest], "ecdsa-sha256")
        verify_ecdsa(client.credential_info(authorization.credential_id).public_key_der, signature, digest)
    with pytest.raises(ValueError):  # a certificate without its key, or the reverse
        SignServerClient("127.0.0.1:1", root_certificates=b"", client_certificate=pem(certificate))


def test_application_with_an_unknown_key_is_refused(world):
    with world.client("ssk_not-a-real-key") as stranger, pytest.raises(AuthenticationRefused) as refused:
        stranger.credential_info(world.holder.credential.id)
    assert "x-api-key" in refused.value.message and refused.value.reason == "APPLICATION_UNAUTHENTICATED"


def test_bad_requests_are_invalid_arguments(world, client, tmp_path):
    authorization = client.authorize(world.holder.account.username, PASSWORD, digests=[bytes(32)])
    with pytest.raises(InvalidArgument) as refused:
        client.sign_hashes(authorization, [bytes(32)], "md5-rsa")
    assert "md5-rsa" in refused.value.message
    target = tmp_path / "never.pdf"
    with pytest.raises(InvalidArgument) as refused:
        client.sign_pdf(io.BytesIO(b"%PDF-1.7 but nothing else"), target, account=world.holder.account.username,
                        password=PASSWORD, credential_id=world.holder.credential.id)
    assert "not a readable PDF" in refused.value.message
    assert list(tmp_path.iterdir()) == []  # neither the target nor a partial file


def test_unknown_credential_is_not_found(client):
    with pytest.raises(NotFound):
        client.credential_info("no-such-credential")


def test_example_script_signs_through_a_real_server(world, client, tmp_path):
    source, target = tmp_path / "in.pdf", tmp_path / "out.pdf"
    source.write_bytes(sample_pdf(1))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(world.root_certificates)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sign_with_client.py"), world.address, "--ca", str(ca),
         "--account", world.holder.account.username, "--credential", world.holder.credential.id, "--no-otp",
         str(source), str(target)],
        env={"PATH": "/usr/bin:/bin", "SIGNSERVER_API_KEY": world.api_key, "SIGNSERVER_ACCOUNT_PASSWORD": PASSWORD},
        capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified: VALID" in result.stdout and "the signature verifies" in result.stdout
    assert client.verify_pdf(target).verdict
