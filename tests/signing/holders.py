"""Holders with signing data packages, and the steps of a signature, for the package tests."""

from __future__ import annotations

import hashlib
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_der_public_key

from signserver.accounts.model import AccountKind
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol

ECDSA = SignatureAlgorithm.ECDSA_SHA256
RSA = SignatureAlgorithm.RSA_PKCS1V15_SHA256
CLOUD_SIGNATURE = "cloud-signature-corporate"


def digests(*texts: str) -> list[bytes]:
    return [hashlib.sha256(t.encode()).digest() for t in texts]


def new_holder(service, username: str | None = None, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256, **fields):
    """A corporate account (so that the cloud-signature profile fits it); returns NewAccount."""
    created, _ = enrol(service, username or f"holder{uuid.uuid4().hex[:8]}", key_algorithm=algorithm,
                       kind=AccountKind.CORPORATE, organisation="Example Lda", **fields)
    return created


def no_otp_application(service):
    app, _ = service.applications.create(f"app-{uuid.uuid4().hex[:8]}", otp_required=False)
    return app


def authorize(service, app, username: str, credential_id: str, wanted: list[bytes], password: str = PASSWORD):
    return service.signer.authorize(app, username, Secret(password), None, credential_id, HashAlgorithm.SHA256,
                                    wanted)


def sign(service, app, credential_id: str, token: str, wanted: list[bytes],
         algorithm: SignatureAlgorithm = ECDSA) -> list[bytes]:
    return service.signer.sign_hashes(app, credential_id, Secret(token), algorithm, wanted)


def authorize_and_sign(service, app, username: str, credential_id: str, wanted: list[bytes],
                       password: str = PASSWORD, algorithm: SignatureAlgorithm = ECDSA) -> list[bytes]:
    authorization = authorize(service, app, username, credential_id, wanted, password)
    return sign(service, app, authorization.credential_id, authorization.token, wanted, algorithm)


def verifies(public_key_der: bytes, signature: bytes, digest: bytes) -> bool:
    """Whether ``signature`` is the key's signature of the SHA-256 ``digest`` (ECDSA or PKCS#1 v1.5)."""
    public = load_der_public_key(public_key_der)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except Exception:  # noqa: BLE001 - any failure to verify is "not this key's signature"
        return False
    return True


def assert_signed_by(public_key_der: bytes, signatures: list[bytes], wanted: list[bytes]) -> None:
    assert len(signatures) == len(wanted)
    for signature, digest in zip(signatures, wanted):
        assert verifies(public_key_der, signature, digest)
