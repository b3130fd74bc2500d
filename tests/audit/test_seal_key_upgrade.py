"""A token whose seal key is the P-256 key of an earlier version gets an Ed25519 successor: the
old key never seals again, and verifies only the seals it made before the switch."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from signserver.accounts import otp
from signserver.audit.seal import AuditSealer, token_seal_key
from signserver.audit.seal_format import NO_PREVIOUS_SEAL, SealContent
from signserver.audit.seal_key import SealKeyPin, fingerprint
from signserver.audit.verify import verify_audit_log
from signserver.errors import CredentialUnusable
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.store.schema import audit_head, audit_seals, credentials
from tests import cli_forkserver
from tests.audit.test_seal_tampering import append
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, enrol


@pytest.fixture
def upgraded(fresh_service, tmp_path):
    """A log sealed once by a P-256 seal key (as an earlier version did, pinned), then sealed by
    the current sealer: returns the service, the sealer, the old key's id and label."""
    label = f"signserver-audit-seal-{uuid.uuid4().hex[:8]}"  # the token is shared: a label of our own
    old_key = fresh_service.keys.generate(KeyAlgorithm.EC_P256, label)
    pin = SealKeyPin(tmp_path / "state" / "audit" / "seal-key.pem")
    pin.ensure(fresh_service.keys.public_key(old_key.key_id))
    enrol(fresh_service)
    with fresh_service.database.read() as conn:
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    old_seal = SealContent(number=1, seq=head.seq, hash=head.hash, at=int(fresh_service.clock.now().timestamp()),
                           prev_seal=NO_PREVIOUS_SEAL)
    signature = fresh_service.keys.sign_data(old_key.key_id, old_seal.message(), SignatureAlgorithm.ECDSA_SHA256)
    with fresh_service.database.transaction() as conn:
        conn.execute(audit_seals.insert().values(number=1, seq=old_seal.seq, hash=old_seal.hash, at=old_seal.at,
                                                 key_id=old_key.key_id, signature=signature,
                                                 format=old_seal.format, prev_seal=old_seal.prev_seal))
    sealer = AuditSealer(fresh_service.database, fresh_service.keys, fresh_service.audit, fresh_service.clock,
                         100, 60, pin, key_label=label)
    fresh_service.clock.advance(seconds=30)
    append(fresh_service, 1)
    assert sealer.seal() is not None
    return fresh_service, sealer, old_key.key_id, label


def verified(service, sealer):
    return verify_audit_log(service.database, sealer.pin, service.clock.now(), sealer.max_seal_age)


def seal_rows(service):
    with service.database.read() as conn:
        return conn.execute(select(audit_seals).order_by(audit_seals.c.number)).all()


def test_a_p256_seal_key_gets_an_ed25519_successor(upgraded):
    service, sealer, old_key_id, label = upgraded
    new = token_seal_key(service.keys, label)
    assert new.successor and new.key_id != old_key_id
    assert service.keys.get(new.key_id).algorithm is KeyAlgorithm.ED25519
    assert service.keys.get(new.key_id).label == label + "-2"
    assert [r.key_id for r in seal_rows(service)] == [old_key_id, new.key_id]
    # Both pins: the old one untouched, the new one naming the first seal it made.
    assert sealer.pin.load().fingerprint == fingerprint(service.keys.public_key(old_key_id))
    successor = sealer.pin.successor().load()
    assert successor.fingerprint == fingerprint(service.keys.public_key(new.key_id)) and successor.first_seal == 2
    result = verified(service, sealer)
    assert result.intact, result.problems
    assert (result.seals, result.predecessor_seals, result.seal_key) == (2, 1, successor.fingerprint)
    assert "verifies only seals numbered below 2 (legacy: 1 seals)" in result.predecessor_summary


def test_attack_3_through_the_old_seal_key_is_refused_and_reported(upgraded):
    service, sealer, old_key_id, _ = upgraded
    target = seal_rows(service)[1]
    forged = SealContent(number=target.number, seq=target.seq, hash=target.hash, at=target.at,
                         prev_seal=target.prev_seal)
    digest = hashlib.sha256(forged.message()).digest()
    # The insider points a credential at the old seal key and asks SignHash for the digest.
    created, seed = enrol(service)
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == created.credential.id)
                     .values(key_id=old_key_id, key_store="token", key_algorithm=KeyAlgorithm.EC_P256.value))
    app, _ = service.applications.create(f"app-{created.account.username}")
    token = service.signer.authorize(app, created.account.username, Secret(PASSWORD),
                                     otp.code_at(seed, service.clock.now()), created.credential.id,
                                     HashAlgorithm.SHA256, [digest])
    with pytest.raises(CredentialUnusable):
        service.signer.sign_hashes(app, created.credential.id, Secret(token.token), SignatureAlgorithm.ECDSA_SHA256,
                                   [digest])
    # Even had it signed (as SignHash did before), the old key no longer makes seals that verify.
    signature = service.keys.sign_data(old_key_id, forged.message(), SignatureAlgorithm.ECDSA_SHA256)
    with service.database.transaction() as conn:
        conn.execute(update(audit_seals).where(audit_seals.c.number == target.number)
                     .values(key_id=old_key_id, signature=signature))
    result = verified(service, sealer)
    assert not result.intact
    assert any(p.startswith("the seal 2 at record") and "does not verify with the pinned seal key" in p
               for p in result.problems), result.problems


def test_audit_verify_names_the_legacy_seals(upgraded, state_dir):
    service, sealer, _, _ = upgraded
    # The command reads the pins of the state directory: put ours there for a copy of the run.
    pin_dir = state_dir / "audit"
    saved = {p: p.read_bytes() for p in pin_dir.glob("seal-key*.pem")} if pin_dir.exists() else {}
    try:
        pin_dir.mkdir(mode=0o700, exist_ok=True)
        for source in (sealer.pin.path, sealer.pin.successor().path):
            (pin_dir / source.name).write_bytes(source.read_bytes())
        env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=service.database.url)
        shown = cli_forkserver.run([str(SIGNSERVER), "audit", "verify"], env=env, capture_output=True, text=True)
    finally:
        for path in pin_dir.glob("seal-key*.pem"):
            path.unlink()
        for path, text in saved.items():
            path.write_bytes(text)
    assert "replaced seal key SHA-256" in shown.stdout and "legacy: 1 seals" in shown.stdout, shown.stdout


def test_an_ed25519_seal_key_is_kept(fresh_service, tmp_path):
    label = f"signserver-audit-seal-{uuid.uuid4().hex[:8]}"
    sealer = AuditSealer(fresh_service.database, fresh_service.keys, fresh_service.audit, fresh_service.clock,
                         100, 60, SealKeyPin(tmp_path / "audit" / "seal-key.pem"), key_label=label)
    enrol(fresh_service)
    sealer.seal()
    key = token_seal_key(fresh_service.keys, label)
    assert not key.successor and fresh_service.keys.get(key.key_id).label == label
    assert not sealer.pin.successor().path.exists()
    assert sealer.pin.load().public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
