"""The holder signing paths sign with holder keys only: a credential pointed (by someone who can
write the database) at a key the server keeps for itself is refused, and nothing is signed."""

from __future__ import annotations

import hashlib
import io
import logging
import uuid

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import func, select, update

from signserver.accounts import otp
from signserver.ca import repository as ca_repo
from signserver.ca.authority import ISSUING
from signserver.errors import CredentialUnusable, SignServerError
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.store.schema import audit_log, credentials
from tests.conftest import PASSWORD, enrol


def point_credential_at(service, key_id: str):
    """A holder whose credential row names ``key_id`` (and that key's algorithm), and an application."""
    created, seed = enrol(service)
    algorithm = service.keys.get(key_id).algorithm
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == created.credential.id)
                     .values(key_id=key_id, key_store="token", key_algorithm=algorithm.value))
    app, _ = service.applications.create(f"app-{created.account.username}")
    return created, seed, app, algorithm


def signatures_logged(service) -> int:
    """Signatures recorded and not recorded as failed afterwards."""
    with service.database.read() as conn:
        def count(event: str) -> int:
            return conn.execute(select(func.count()).select_from(audit_log)
                                .where(audit_log.c.event == event)).scalar_one()
        return count("signature") - count("signature.failed")


def sign_hash_with(service, key_id: str) -> None:
    """Authorize and SignHash over a digest with a credential pointed at ``key_id``."""
    created, seed, app, algorithm = point_credential_at(service, key_id)
    digest = hashlib.sha256(b"a forged structure").digest()
    token = service.signer.authorize(app, created.account.username, Secret(PASSWORD),
                                     otp.code_at(seed, service.clock.now()), created.credential.id,
                                     HashAlgorithm.SHA256, [digest])
    scheme = SignatureAlgorithm.ECDSA_SHA256 if algorithm is KeyAlgorithm.EC_P256 else SignatureAlgorithm.RSA_PKCS1V15_SHA256
    service.signer.sign_hashes(app, created.credential.id, Secret(token.token), scheme, [digest])


def issuing_ca_key(service) -> str:
    service.ca.initialise(operator="operator:test")
    with service.database.read() as conn:
        return ca_repo.get_authority(conn, ISSUING).key_id


def test_sign_hash_refuses_a_legacy_audit_seal_key(fresh_service, caplog):
    seal_key = fresh_service.keys.generate(KeyAlgorithm.EC_P256, f"signserver-audit-seal-{uuid.uuid4().hex[:8]}")
    before = signatures_logged(fresh_service)
    with caplog.at_level(logging.WARNING), pytest.raises(CredentialUnusable) as refused:
        sign_hash_with(fresh_service, seal_key.key_id)
    assert "signserver-audit-seal" not in str(refused.value) and seal_key.key_id not in str(refused.value)
    assert signatures_logged(fresh_service) == before
    assert any("reserved for the server's own use" in r.getMessage() for r in caplog.records)


def test_sign_hash_refuses_the_issuing_ca_key(fresh_service):
    before = signatures_logged(fresh_service)
    with pytest.raises(CredentialUnusable):
        sign_hash_with(fresh_service, issuing_ca_key(fresh_service))
    assert signatures_logged(fresh_service) == before


def test_pades_refuses_the_issuing_ca_key(fresh_service, caplog):
    created, _, app, _ = point_credential_at(fresh_service, issuing_ca_key(fresh_service))
    with caplog.at_level(logging.WARNING), pytest.raises(CredentialUnusable) as refused:
        fresh_service.pades.prepare_pdf(app, created.credential.id, io.BytesIO(b"%PDF-1.7\n"))
    assert str(refused.value) == f"credential {created.credential.id} cannot sign"
    assert any("reserved for the server's own use" in r.getMessage() for r in caplog.records)


def test_holder_keys_still_sign(fresh_service):
    created, seed = enrol(fresh_service)
    app, _ = fresh_service.applications.create(f"app-{created.account.username}")
    digest = hashlib.sha256(b"ordinary").digest()
    token = fresh_service.signer.authorize(app, created.account.username, Secret(PASSWORD),
                                           otp.code_at(seed, fresh_service.clock.now()), created.credential.id,
                                           HashAlgorithm.SHA256, [digest])
    [signature] = fresh_service.signer.sign_hashes(app, created.credential.id, Secret(token.token),
                                                   SignatureAlgorithm.ECDSA_SHA256, [digest])
    public = load_der_public_key(fresh_service.packages.public_key_der(created.credential.key_id))
    public.verify(signature, b"ordinary", ec.ECDSA(hashes.SHA256()))


def test_a_signature_the_hsm_then_fails_is_recorded_as_failed(fresh_service):
    # The signature is recorded with the spending of the token, before the HSM signs; a failure
    # of the HSM after that leaves a record that says so.
    key = fresh_service.keys.generate(KeyAlgorithm.EC_P256, f"holder-{uuid.uuid4().hex[:8]}")
    created, seed, app, _algorithm = point_credential_at(fresh_service, key.key_id)
    first, second = (hashlib.sha256(text).digest() for text in (b"first", b"second"))
    token = fresh_service.signer.authorize(app, created.account.username, Secret(PASSWORD),
                                           otp.code_at(seed, fresh_service.clock.now()), created.credential.id,
                                           HashAlgorithm.SHA256, [first, second])

    def sign(digest: bytes) -> list[bytes]:
        return fresh_service.signer.sign_hashes(app, created.credential.id, Secret(token.token),
                                                SignatureAlgorithm.ECDSA_SHA256, [digest])

    sign(first)  # the key's handle and label are now cached
    raw_id = bytes.fromhex(key.key_id)
    fresh_service.keys.session.run(  # the key goes behind the cache's back: the next signature fails in the HSM
        lambda session: [o.destroy() for o in list(session.get_objects({pkcs11.Attribute.ID: raw_id}))], "destroy")
    with pytest.raises(SignServerError):
        sign(second)
    with fresh_service.database.read() as conn:
        events = conn.execute(select(audit_log.c.event).where(audit_log.c.detail.contains(second.hex()))
                              .order_by(audit_log.c.seq)).scalars().all()
    assert events == ["signature", "signature.failed"]
