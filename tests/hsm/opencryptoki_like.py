"""The mechanisms openCryptoki 3.8.1's soft token lists (Debian 12), for testing on SoftHSM what
signserver chooses on a token with RSA and AES-CBC only: no EC, no EdDSA, no AES-GCM, no AES key
wrap, no CKM_SHA256_RSA_PKCS."""

from __future__ import annotations

from pkcs11 import Mechanism

from signserver.hsm.capabilities import TokenCapabilities

OPENCRYPTOKI_SOFT_TOKEN = TokenCapabilities(frozenset({
    Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS, Mechanism.RSA_X_509, Mechanism.RSA_PKCS_OAEP,
    Mechanism.RSA_PKCS_PSS, Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.SHA1_RSA_PKCS,
    Mechanism.SHA_1, Mechanism.SHA256, Mechanism.SHA384, Mechanism.SHA512,
    Mechanism.SHA256_HMAC, Mechanism.SHA384_HMAC, Mechanism.SHA512_HMAC, Mechanism.GENERIC_SECRET_KEY_GEN,
    Mechanism.AES_KEY_GEN, Mechanism.AES_ECB, Mechanism.AES_CBC, Mechanism.AES_CBC_PAD,
}))


def like_opencryptoki(service) -> None:
    """Make every choice ``service`` makes from its token's mechanism list (its own session's)
    as on openCryptoki's soft token; the keys are still made and used on SoftHSM."""
    service.keys.session._capabilities = OPENCRYPTOKI_SOFT_TOKEN  # what the session read once, replaced
