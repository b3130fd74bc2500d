"""Migration 0007: a holder whose key was made on the token before packages keeps signing with it;
the first sign-in gives the account its seal key, and a renewal then makes a package."""

from __future__ import annotations

import hashlib
import uuid

import argon2
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, text

from signserver.accounts import otp
from signserver.ca.authority import CertificateRequest
from signserver.errors import CertificateRefused
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.store.database import MIGRATIONS, Database
from signserver.store.schema import accounts, credentials
from tests.conftest import empty_database_url, service_with
from tests.signing.holders import CLOUD_SIGNATURE, assert_signed_by, no_otp_application

PASSWORD = "Before-packages-1"
OPERATOR = "operator:test"


def old_database(path, service, username: str, clock) -> tuple[str, str]:
    """A database at migration 0006 with one holder whose key is on the token, as the code of
    that time enrolled it; returns the credential id and the key id."""
    database = Database(empty_database_url(path))
    migrations = AlembicConfig()
    migrations.set_main_option("script_location", str(MIGRATIONS))
    now = clock.now()
    key = service.keys.generate(KeyAlgorithm.EC_P256, f"credential-{username}-{now:%Y%m%d%H%M%S}")
    sealed_seed = service.accounts._sealing.seal(otp.new_seed().encode("ascii"), username.encode("utf-8"))
    old_hasher = argon2.PasswordHasher()
    epoch = int(now.timestamp())
    credential_id = uuid.uuid4().hex[:16]
    with database.transaction() as conn:
        migrations.attributes["connection"] = conn
        command.upgrade(migrations, "0006")
        account_id = conn.execute(text(
            "INSERT INTO accounts (username, holder_name, kind, organisation, department, title, status, "
            "password_hash, password_changed_at, otp_seed_sealed, recovery_code_hash, created_at) VALUES "
            "(:u, 'Lei Ka Io', 'corporate', 'Example Lda', '', '', 'active', :p, :t, :s, :r, :t) RETURNING id"),
            {"u": username, "p": old_hasher.hash(PASSWORD), "t": epoch, "s": sealed_seed,
             "r": old_hasher.hash("AAAAABBBBBCCCCCDDDDDEEEEE")}).scalar_one()
        conn.execute(text("INSERT INTO account_emails (account_id, position, address) VALUES (:a, 0, :e)"),
                     {"a": account_id, "e": f"{username}@example.mo"})
        conn.execute(text(
            "INSERT INTO credentials (id, account_id, key_id, key_algorithm, status, description, created_at) "
            "VALUES (:i, :a, :k, 'ec-p256', 'active', 'cloud signature key', :t)"),
            {"i": credential_id, "a": account_id, "k": key.key_id, "t": epoch})
    database.dispose()
    return credential_id, key.key_id


@pytest.fixture
def migrated(service, config, tmp_path, clock):
    username = f"early{uuid.uuid4().hex[:8]}"
    path = tmp_path / "signserver.db"
    credential_id, key_id = old_database(path, service, username, clock)
    upgraded = service_with(config, path, clock)  # migrates to the newest revision
    upgraded.ca.initialise(operator=OPERATOR)
    return upgraded, username, credential_id, key_id


def account_columns(service, username: str):
    with service.database.read() as conn:
        return conn.execute(select(accounts).where(accounts.c.username == username)).first()


def test_a_token_key_from_before_packages_keeps_signing_and_renews_into_a_package(migrated, clock):
    service, username, credential_id, key_id = migrated
    before = account_columns(service, username)
    assert before.key_algorithm == "ec-p256" and before.seal_public_key is None
    assert before.password_hash.startswith("$argon2id$")
    with service.database.read() as conn:
        assert conn.execute(select(credentials.c.key_store).where(credentials.c.id == credential_id)).scalar() == \
            "token"
    app = no_otp_application(service)
    # Its first certificate goes to the token key; a renewal needs the seal key, which the
    # holder's first sign-in makes.
    first = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, username), OPERATOR)
    assert first.credential_id == credential_id
    with pytest.raises(CertificateRefused, match="predates signing data packages"):
        service.ca.renew(first.serial, OPERATOR)

    wanted = [hashlib.sha256(f"page {i}".encode()).digest() for i in range(2)]
    authorization = service.signer.authorize(app, username, Secret(PASSWORD), None, credential_id,
                                             HashAlgorithm.SHA256, wanted)
    signatures = service.signer.sign_hashes(app, credential_id, Secret(authorization.token),
                                            SignatureAlgorithm.ECDSA_SHA256, wanted)
    token_public = service.keys.public_key(key_id).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert_signed_by(token_public, signatures, wanted)

    after = account_columns(service, username)
    assert after.seal_public_key is not None and after.seal_key_by_password is not None
    assert after.password_hash.startswith("$argon2id-kdf$")

    clock.advance(seconds=1)
    renewed = service.ca.renew(first.serial, OPERATOR)
    credential = service.credentials.credential(app, renewed.credential_id)
    assert credential.is_package and credential.key_algorithm is KeyAlgorithm.EC_P256
    wanted = [hashlib.sha256(b"renewed").digest()]
    authorization = service.signer.authorize(app, username, Secret(PASSWORD), None, "", HashAlgorithm.SHA256, wanted)
    assert authorization.credential_id == renewed.credential_id
    signatures = service.signer.sign_hashes(app, renewed.credential_id, Secret(authorization.token),
                                            SignatureAlgorithm.ECDSA_SHA256, wanted)
    assert_signed_by(service.packages.public_key_der(credential.key_id), signatures, wanted)
    # The token key still signs under its own credential, certified as before.
    clock.advance(seconds=1)
    authorization = service.signer.authorize(app, username, Secret(PASSWORD), None, credential_id,
                                             HashAlgorithm.SHA256, wanted)
    assert_signed_by(token_public, service.signer.sign_hashes(app, credential_id, Secret(authorization.token),
                                                              SignatureAlgorithm.ECDSA_SHA256, wanted), wanted)
