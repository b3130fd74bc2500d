"""Holder packages and master keys on tokens without AES key wrap or CKA_WRAP_WITH_TRUSTED
(openCryptoki's soft token): the wrap mechanism is chosen from the token's list and recorded,
a master key's check value is had even where the token keeps none, and a master key leaves the
token only under a trusted key, or not at all."""

from __future__ import annotations

import datetime
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_der_public_key
import pkcs11.exceptions as p11
from pkcs11 import Attribute, Mechanism

from signserver.errors import DataCorrupted
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.master_keys import MasterKeys, computed_check_value
from signserver.hsm.packages import KeyToOpen, PackageKeys, choose_wrap_mechanism, unwrap_parameters
from signserver.hsm.sealing import token_check_value
from tests.hsm.opencryptoki_like import OPENCRYPTOKI_SOFT_TOKEN, like_opencryptoki

NOW = datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc)


@pytest.fixture
def master(fresh_service):
    masters = MasterKeys(fresh_service.keys.session)
    label = f"test-master-{uuid.uuid4().hex[:8]}"
    masters.create(label)
    yield masters, label
    masters.destroy(label)


def test_without_aes_key_wrap_packages_are_wrapped_with_aes_cbc_pad(fresh_service, master):
    assert choose_wrap_mechanism(OPENCRYPTOKI_SOFT_TOKEN) == "aes-cbc-pad"
    like_opencryptoki(fresh_service)
    assert PackageKeys(fresh_service.keys.session, master[0]).mechanism() == "aes-cbc-pad"


def test_a_token_with_aes_key_wrap_keeps_it(fresh_service, master):
    if not fresh_service.keys.session.capabilities().offers(Mechanism.AES_KEY_WRAP_PAD):
        pytest.skip("this token has no CKM_AES_KEY_WRAP_PAD")
    assert PackageKeys(fresh_service.keys.session, master[0]).mechanism() == "aes-key-wrap-pad"


def test_what_aes_cbc_pad_wrapped_carries_its_iv_and_a_truncated_one_is_refused():
    mechanism, iv, body = unwrap_parameters("aes-cbc-pad", bytes(range(48)))
    assert mechanism is Mechanism.AES_CBC_PAD and iv == bytes(range(16)) and body == bytes(range(16, 48))
    with pytest.raises(DataCorrupted):
        unwrap_parameters("aes-cbc-pad", bytes(31))
    with pytest.raises(DataCorrupted):
        unwrap_parameters("no-such-wrap", bytes(48))


def test_a_package_wrapped_with_aes_cbc_pad_opens_signs_and_is_rewrapped(fresh_service, master):
    if fresh_service.keys.session.capabilities().offers(Mechanism.AES_KEY_WRAP_PAD):
        pytest.skip("SoftHSM 2.6.1 cannot wrap with CKM_AES_CBC_PAD (MechanismInvalid, measured): this runs on "
                    "tokens without AES key wrap (the openCryptoki run)")
    masters, label = master
    keys = PackageKeys(fresh_service.keys.session, masters)
    wrapped = keys.make(KeyAlgorithm.RSA_2048, label)
    assert wrapped.mechanism == "aes-cbc-pad"
    public = load_der_public_key(wrapped.public_key_der)
    digest = bytes(range(32))

    def sign(handle, wrapped_package_key, master_label, wrapped_private=wrapped.wrapped_private):
        to_open = KeyToOpen(handle, wrapped.algorithm, wrapped_private, wrapped_package_key, master_label,
                            wrapped.mechanism, NOW + datetime.timedelta(minutes=5))
        return keys.sign(handle, [digest], SignatureAlgorithm.RSA_PKCS1V15_SHA256, NOW, to_open, last=True)[0]

    public.verify(sign("first", wrapped.wrapped_package_key, label), digest, padding.PKCS1v15(),
                  Prehashed(hashes.SHA256()))
    # A key kept open for a token's further signatures is sensitive and not extractable, even on a
    # token that ignores those attributes in C_UnwrapKey's template.
    session = fresh_service.keys.session
    kept_open = KeyToOpen("kept", wrapped.algorithm, wrapped.wrapped_private, wrapped.wrapped_package_key, label,
                          wrapped.mechanism, NOW + datetime.timedelta(minutes=5))
    keys.sign("kept", [digest], SignatureAlgorithm.RSA_PKCS1V15_SHA256, NOW, kept_open)
    held = session.run(lambda s: {a: bool(session.cache[("open", "kept")].key[a])
                                  for a in (Attribute.SENSITIVE, Attribute.EXTRACTABLE)}, "read the open key")
    assert held == {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
    other = f"test-master-{uuid.uuid4().hex[:8]}"
    masters.create(other)
    try:
        rewrapped = keys.rewrap(wrapped.wrapped_package_key, wrapped.mechanism, label, other)
        public.verify(sign("second", rewrapped, other), digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        altered = bytearray(wrapped.wrapped_package_key)
        altered[20] ^= 0x01
        with pytest.raises(DataCorrupted):
            sign("third", bytes(altered), label)
    finally:
        masters.destroy(other)


def test_a_master_key_check_value_computed_in_the_token_is_its_cka_check_value(fresh_service, master):
    masters, label = master
    session = fresh_service.keys.session

    def both(pkcs11_session):
        key = masters.handle(pkcs11_session, label)
        return token_check_value(key), computed_check_value(pkcs11_session, key)

    kept, computed = session.run(both, "read a check value")
    if not kept:
        pytest.skip("this token keeps no CKA_CHECK_VALUE to compare with")
    assert computed == kept and len(computed) == 6
    assert masters.describe(label).check_value == kept


def test_a_master_key_leaves_the_token_only_under_a_trusted_key_or_not_at_all(fresh_service, master):
    masters, label = master

    def protection(pkcs11_session):
        key = masters.handle(pkcs11_session, label)
        try:
            trusted_only = bool(key[Attribute.WRAP_WITH_TRUSTED])
        except p11.AttributeTypeInvalid:  # a token that does not know the attribute
            trusted_only = False
        return bool(key[Attribute.SENSITIVE]), bool(key[Attribute.EXTRACTABLE]), trusted_only

    sensitive, extractable, trusted_only = fresh_service.keys.session.run(protection, "read a master key")
    assert sensitive and (trusted_only or not extractable)
    assert masters.describe(label).check_value  # every token gives one: kept or computed
