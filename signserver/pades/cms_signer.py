"""HsmCmsSigner: pyHanko's Signer whose raw signatures are made inside the HSM.

pyHanko builds the CMS structure; only ``async_sign_raw`` reaches the HSM, through the function
the signer is bound to (:meth:`HsmCmsSigner.bind`): the holder's key is usable only once the
holder authorised the signature, which in the two-step flow is after the document was prepared.
Its size-estimating dry runs return placeholder bytes of the right length and never touch the HSM.
"""

from __future__ import annotations

import asyncio

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signserver.errors import UnsupportedAlgorithm
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.pades.cms_der import signed_data
from typing import Callable


# Longest DER ECDSA signature for each curve (two INTEGERs with a leading zero each).
_ECDSA_MAX = {256: 72, 384: 104}


def to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


SignDigest = Callable[[bytes, SignatureAlgorithm], bytes]  # (digest, algorithm) -> signature


class HsmCmsSigner(Signer):
    def __init__(self, algorithm: KeyAlgorithm, certificate: x509.Certificate, chain: list[x509.Certificate],
                 sign_digest: SignDigest | None = None):
        if algorithm.family not in ("rsa", "ec"):
            raise UnsupportedAlgorithm(f"PDF signatures need an RSA or EC key, not {algorithm.value}")
        super().__init__(signing_cert=to_asn1(certificate),
                         cert_registry=SimpleCertificateStore.from_certs([to_asn1(c) for c in chain]),
                         embed_roots=True)
        self._algorithm = algorithm
        self._sign_digest = sign_digest

    def _package_signature(self, *, digest_algorithm: str, cms_version, signed_attrs: cms.CMSAttributes,
                           signature: bytes, unsigned_attrs: cms.CMSAttributes | None, encap_content_info):
        # pyHanko's packaging (every certificate of the chain, roots too, and the signer's; this
        # signer has no attribute certificates), written as bytes from its parts: built in place
        # by asn1crypto, a part of an unlucky length cost seconds of CPU (see cms_der).
        return signed_data(version=cms_version, signer_info=self.signer_info(digest_algorithm, signed_attrs, signature),
                           unsigned_attrs=unsigned_attrs, certificates=[*self.cert_registry, self.signing_cert],
                           encap_content_info=encap_content_info)

    def bind(self, sign_digest: SignDigest) -> None:
        """Sign with ``sign_digest`` from now on (once the holder authorised the signature)."""
        self._sign_digest = sign_digest

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            size = self._algorithm.size // 8 if self._algorithm.family == "rsa" else _ECDSA_MAX[self._algorithm.size]
            return bytes(size)
        if self._sign_digest is None:
            raise RuntimeError("the signer was not bound to a key: the holder has not authorised the signature")
        scheme = "rsa-pkcs1v15" if self._algorithm.family == "rsa" else "ecdsa"
        algorithm = SignatureAlgorithm(f"{scheme}-{digest_algorithm.lower()}")
        # The HSM call blocks; let the event loop go on meanwhile.
        return await asyncio.to_thread(self._sign_digest, algorithm.hash.digest(data), algorithm)
