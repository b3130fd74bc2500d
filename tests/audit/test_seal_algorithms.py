"""The audit seal key follows the token: Ed25519 where it offers EdDSA, else ECDSA or RSA, chosen
once and then kept (a key chosen on an RSA-only token is not an old key to replace), and every
seal it makes verifies with the pinned key."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signserver.audit.seal import AuditSealer, token_seal_key
from signserver.audit.seal_key import SealKeyPin
from signserver.audit.verify import verify_audit_log
from signserver.errors import ConfigurationError
from signserver.hsm.algorithms import KeyAlgorithm
from tests.audit.test_seal_tampering import append
from tests.hsm.opencryptoki_like import like_opencryptoki


def sealer_for(service, pin_dir, label, key_algorithm="auto"):
    return AuditSealer(service.database, service.keys, service.audit, service.clock, 100, 60,
                       SealKeyPin(pin_dir / "seal-key.pem"), key_label=label, key_algorithm=key_algorithm)


def verified(service, sealer):
    return verify_audit_log(service.database, sealer.pin, service.clock.now(), sealer.max_seal_age)


def test_on_an_rsa_only_token_the_seal_key_is_rsa_and_its_seals_verify(fresh_service, tmp_path):
    like_opencryptoki(fresh_service)
    label = f"signserver-audit-seal-{uuid.uuid4().hex[:8]}"
    sealer = sealer_for(fresh_service, tmp_path, label)
    append(fresh_service, 1)
    assert sealer.seal() is not None
    key = token_seal_key(fresh_service.keys, label)
    assert not key.successor and fresh_service.keys.get(key.key_id).algorithm is KeyAlgorithm.RSA_3072
    assert isinstance(sealer.pin.load().public_key, rsa.RSAPublicKey)

    # Another process (a new session, the same token) keeps sealing with that key: no successor.
    again = fresh_service.__class__.from_config(fresh_service.config, user_pin=fresh_service.config.hsm.user_pin(environ={}),
                                                clock=fresh_service.clock)
    like_opencryptoki(again)
    next_sealer = sealer_for(again, tmp_path, label)
    fresh_service.clock.advance(seconds=30)
    append(fresh_service, 1)
    assert next_sealer.seal() is not None
    assert token_seal_key(again.keys, label) == key
    assert not next_sealer.pin.successor().path.exists()
    result = verified(fresh_service, next_sealer)
    assert result.intact, result.problems
    assert result.seals == 2


def test_a_named_seal_key_algorithm_is_kept(fresh_service, tmp_path):
    label = f"signserver-audit-seal-{uuid.uuid4().hex[:8]}"
    sealer = sealer_for(fresh_service, tmp_path, label, key_algorithm="ec-p256")
    append(fresh_service, 1)
    assert sealer.seal() is not None
    key = token_seal_key(fresh_service.keys, label, "ec-p256")
    assert not key.successor and fresh_service.keys.get(key.key_id).algorithm is KeyAlgorithm.EC_P256
    assert isinstance(sealer.pin.load().public_key, ec.EllipticCurvePublicKey)
    result = verified(fresh_service, sealer)
    assert result.intact, result.problems


def test_a_seal_key_algorithm_the_token_cannot_use_is_refused_naming_the_setting(fresh_service, tmp_path):
    like_opencryptoki(fresh_service)
    sealer = sealer_for(fresh_service, tmp_path, f"signserver-audit-seal-{uuid.uuid4().hex[:8]}", "ed25519")
    append(fresh_service, 1)
    with pytest.raises(ConfigurationError) as refused:
        sealer.seal()
    assert refused.value.key == "audit.seal_key_algorithm"
