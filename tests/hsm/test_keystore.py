"""HsmKeyStore on a real token (SoftHSM, or openCryptoki with fewer algorithms): generation,
attributes, signing, lookups."""

from __future__ import annotations

import hashlib

import pkcs11
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signserver.errors import AlreadyExists, InvalidArgument, KeyNotFound, UnsupportedAlgorithm
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.module import load_module, pkcs11_lock
from tests.conftest import require_key_algorithm

pytestmark = pytest.mark.one_store  # touches no store

MESSAGE = b"the document a holder signs"


@pytest.fixture(scope="module")
def keys(keystore, capabilities):
    """One key of every algorithm the token can use, generated once for this module."""
    return {a: keystore.generate(a, f"keystore-{a.value}") for a in KeyAlgorithm if capabilities.can_use(a)}


# The scheme a key of each algorithm the tests may get from the token signs with.
SCHEME_OF = {KeyAlgorithm.EC_P256: SignatureAlgorithm.ECDSA_SHA256,
             KeyAlgorithm.RSA_2048: SignatureAlgorithm.RSA_PKCS1V15_SHA256}


def verify(public_key, signature: bytes, algorithm: SignatureAlgorithm, message: bytes) -> None:
    """Verify with cryptography alone; raises InvalidSignature."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, message)
        return
    digest = algorithm.hash.digest(message)
    prehashed = Prehashed(algorithm.hash.cryptography_hash)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
    elif algorithm.value.startswith("rsa-pss"):
        public_key.verify(signature, digest, padding.PSS(padding.MGF1(algorithm.hash.cryptography_hash),
                                                         algorithm.hash.digest_size), prehashed)
    else:
        public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)


def test_every_algorithm_generates_a_protected_key(keys):
    for algorithm, key in keys.items():
        assert key.algorithm is algorithm
        assert key.size == algorithm.size
        assert len(bytes.fromhex(key.key_id)) == 16
        a = key.attributes
        assert (a.token, a.private, a.sensitive, a.extractable) == (True, True, True, False), algorithm
        assert (a.always_sensitive, a.never_extractable) == (True, True), algorithm


def test_private_key_value_cannot_be_read(keys, config):
    """Read CKA_VALUE / CKA_PRIVATE_EXPONENT straight through PKCS#11: the token refuses."""
    from signserver.hsm.session import find_token

    with pkcs11_lock():
        lib = load_module(config.hsm.module)
        token = find_token(lib, config.hsm.token_label, config.hsm.module)
        session = token.open()  # the key store has logged this process in already
        try:
            for algorithm, key in keys.items():
                private = next(session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
                                                    pkcs11.Attribute.ID: bytes.fromhex(key.key_id)}))
                secret = (pkcs11.Attribute.PRIVATE_EXPONENT if algorithm.family == "rsa"
                          else pkcs11.Attribute.VALUE)
                with pytest.raises(pkcs11.AttributeSensitive):
                    private[secret]
                assert private[pkcs11.Attribute.EXTRACTABLE] is False
                assert private[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
        finally:
            session.close()


SCHEMES = [
    (KeyAlgorithm.RSA_2048, s) for s in SignatureAlgorithm if s.family == "rsa"
] + [
    (KeyAlgorithm.RSA_3072, SignatureAlgorithm.RSA_PSS_SHA384),
    (KeyAlgorithm.RSA_4096, SignatureAlgorithm.RSA_PKCS1V15_SHA512),
    (KeyAlgorithm.EC_P256, SignatureAlgorithm.ECDSA_SHA256),
    (KeyAlgorithm.EC_P256, SignatureAlgorithm.ECDSA_SHA512),
    (KeyAlgorithm.EC_P384, SignatureAlgorithm.ECDSA_SHA384),
    (KeyAlgorithm.ED25519, SignatureAlgorithm.ED25519),
]


@pytest.mark.parametrize("key_algorithm,scheme", SCHEMES, ids=lambda v: v.value)
def test_signature_verifies_with_cryptography(keystore, capabilities, keys, key_algorithm, scheme):
    require_key_algorithm(capabilities, key_algorithm)
    key = keys[key_algorithm]
    signature = keystore.sign_data(key.key_id, MESSAGE, scheme)
    public = keystore.public_key(key.key_id)
    verify(public, signature, scheme, MESSAGE)
    with pytest.raises(InvalidSignature):
        verify(public, signature, scheme, MESSAGE + b"!")


def test_ecdsa_signature_is_der(keystore, capabilities, keys):
    require_key_algorithm(capabilities, KeyAlgorithm.EC_P256)
    signature = keystore.sign_digest(keys[KeyAlgorithm.EC_P256].key_id, hashlib.sha256(MESSAGE).digest(),
                                     SignatureAlgorithm.ECDSA_SHA256)
    assert signature[0] == 0x30 and signature[1] == len(signature) - 2


def test_public_key_exports_as_spki(keystore, keys):
    for algorithm, key in keys.items():
        public = keystore.public_key(key.key_id)
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert serialization.load_der_public_key(der) == public
        assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
        expected = {"rsa": rsa.RSAPublicKey, "ec": ec.EllipticCurvePublicKey,
                    "ed25519": ed25519.Ed25519PublicKey}[algorithm.family]
        assert isinstance(public, expected)


def test_find_list_and_delete(keystore, label, token_key_algorithm):
    key = keystore.generate(token_key_algorithm, label)
    assert keystore.find_by_label(label) == key
    assert keystore.get(key.key_id) == key
    assert keystore.resolve(key.key_id) == key
    assert key in keystore.list()

    keystore.delete(key.key_id)
    assert key not in keystore.list()
    with pytest.raises(KeyNotFound):
        keystore.get(key.key_id)
    with pytest.raises(KeyNotFound):
        keystore.sign_digest(key.key_id, bytes(32), SCHEME_OF[token_key_algorithm])


def test_labels_are_unique(keystore, label, token_key_algorithm):
    keystore.generate(token_key_algorithm, label)
    with pytest.raises(AlreadyExists, match=label):
        keystore.generate(KeyAlgorithm.RSA_2048, label)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "tab\there"])
def test_bad_labels_are_refused(keystore, bad):
    with pytest.raises(InvalidArgument):
        keystore.generate(KeyAlgorithm.EC_P256, bad)


def test_a_label_or_reference_that_is_not_text_is_refused_before_the_token_is_searched(keystore):
    """A byte that is not UTF-8 (from a terminal in another encoding) reaches Python as a lone
    surrogate, which python-pkcs11 fails to encode part way through starting a search: the process
    died of a segmentation fault. Refused first, wherever a label or key reference comes in."""
    searches = keystore.session.searches
    with pytest.raises(InvalidArgument, match="UTF-8"):
        keystore.generate(KeyAlgorithm.EC_P256, "\udcff")
    for look_up in (keystore.find_by_label, keystore.resolve):
        with pytest.raises(InvalidArgument, match="UTF-8"):
            look_up("label-\udcff")
    assert keystore.session.searches == searches


def test_the_token_session_refuses_to_search_for_a_string_that_is_not_text():
    """The last line of defence, for any caller (master keys, the ceremony's labels): checked
    before python-pkcs11 sees the template, without a token."""
    from pkcs11 import Attribute, ObjectClass

    from signserver.hsm.session import TokenSession
    from signserver.secret import Secret

    class NeverSearched:
        def get_objects(self, template):
            raise AssertionError("the search reached python-pkcs11")

    session = TokenSession(None, "no-token", Secret("1234"))
    with pytest.raises(InvalidArgument, match="UTF-8"):
        session.find(NeverSearched(), {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: "master-\udcff"})


def test_unknown_key_is_reported(keystore):
    with pytest.raises(KeyNotFound, match="00112233"):
        keystore.sign_digest("00112233", bytes(32), SignatureAlgorithm.ECDSA_SHA256)
    with pytest.raises(KeyNotFound, match="no key labelled 'nobody'"):
        keystore.resolve("nobody")


@pytest.mark.parametrize("bad_id", ["xyz", "abc", "", "00" * 65])
def test_malformed_key_ids_are_invalid_arguments(keystore, bad_id):
    with pytest.raises(InvalidArgument):
        keystore.get(bad_id)


def test_digest_length_must_match_the_algorithm(keystore, keys):
    with pytest.raises(InvalidArgument, match="32 bytes, not 20"):
        keystore.sign_digest(keys[KeyAlgorithm.RSA_2048].key_id, bytes(20), SignatureAlgorithm.RSA_PSS_SHA256)


def test_scheme_must_fit_the_key(keystore, keys):
    with pytest.raises(UnsupportedAlgorithm, match="cannot be used with a rsa-2048 key"):
        keystore.sign_digest(keys[KeyAlgorithm.RSA_2048].key_id, bytes(32), SignatureAlgorithm.ECDSA_SHA256)


def test_unknown_algorithm_names_are_refused():
    with pytest.raises(UnsupportedAlgorithm, match="rsa-1024"):
        KeyAlgorithm.parse("rsa-1024")
    with pytest.raises(UnsupportedAlgorithm, match="md5"):
        SignatureAlgorithm.parse("rsa-pkcs1v15-md5")
    assert KeyAlgorithm.parse(" EC-P256 ") is KeyAlgorithm.EC_P256


def test_unsupported_hash_through_cryptography_interface(keystore, keys):
    from signserver.hsm.crypto_keys import hsm_private_key

    private = hsm_private_key(keystore, keys[KeyAlgorithm.RSA_2048].key_id)
    with pytest.raises(UnsupportedAlgorithm, match="sha1"):
        private.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA1())


def test_a_key_whose_curve_cannot_be_read_is_listed_as_of_no_algorithm_and_refused_for_use(keystore, damaged_key):
    key_id = damaged_key(keystore, "damaged-by-a-crash")
    [listed] = [key for key in keystore.list() if key.key_id == key_id]
    assert (listed.label, listed.algorithm, listed.size) == ("damaged-by-a-crash", None, None)
    assert keystore.get(key_id).algorithm is None
    with pytest.raises(UnsupportedAlgorithm):
        keystore.public_key(key_id)
    with pytest.raises(UnsupportedAlgorithm):
        keystore.sign_digest(key_id, hashlib.sha256(MESSAGE).digest(), SignatureAlgorithm.ECDSA_SHA256)
