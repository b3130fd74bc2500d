"""HsmCmsSigner: pyHanko's Signer whose raw signatures are made inside the HSM.

pyHanko builds the CMS structure; only ``async_sign_raw`` reaches the HSM. Its size-estimating dry
runs return placeholder bytes of the right length and never touch the HSM.
"""

from __future__ import annotations

import asyncio

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signserver.errors import UnsupportedAlgorithm
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore

# Longest DER ECDSA signature for each curve (two INTEGERs with a leading zero each).
_ECDSA_MAX = {256: 72, 384: 104}


def to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


class HsmCmsSigner(Signer):
    def __init__(self, keys: HsmKeyStore, key_id: str, algorithm: KeyAlgorithm, certificate: x509.Certificate,
                 chain: list[x509.Certificate]):
        if algorithm.family not in ("rsa", "ec"):
            raise UnsupportedAlgorithm(f"PDF signatures need an RSA or EC key, not {algorithm.value}")
        super().__init__(signing_cert=to_asn1(certificate),
                         cert_registry=SimpleCertificateStore.from_certs([to_asn1(c) for c in chain]),
                         embed_roots=True)
        self._keys = keys
        self._key_id = key_id
        self._algorithm = algorithm

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            size = self._algorithm.size // 8 if self._algorithm.family == "rsa" else _ECDSA_MAX[self._algorithm.size]
            return bytes(size)
        scheme = "rsa-pkcs1v15" if self._algorithm.family == "rsa" else "ecdsa"
        algorithm = SignatureAlgorithm(f"{scheme}-{digest_algorithm.lower()}")
        # The HSM call blocks; let the event loop go on meanwhile.
        return await asyncio.to_thread(self._keys.sign_data, self._key_id, data, algorithm)
