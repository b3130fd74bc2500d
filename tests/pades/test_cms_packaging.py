"""A signature's CMS costs as much to package whatever the length of its unsigned attributes (its
time-stamp token). asn1crypto encodes a value whose length ends in the byte 0x80 again at every
read, and pyHanko's packaging reads each child several times per level: such a token once cost a
signature 6 s of CPU instead of 5 ms. Work is counted in Python function calls, not timed."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import sys

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes, Signer

from signserver.hsm.algorithms import KeyAlgorithm
from signserver.pades.cms_signer import HsmCmsSigner, to_asn1

pytestmark = pytest.mark.one_store  # touches no store

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)


def certificate(name: str, issuer: str | None = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW)
            .not_valid_after(NOW + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))


ROOT = certificate("Packaging Root CA")
ISSUING = certificate("Packaging Issuing CA", "Packaging Root CA")
HOLDER = certificate("Packaging Holder", "Packaging Issuing CA")


TSA = certificate("Packaging Time-Stamping Authority", "Packaging Issuing CA")


def token_attributes(padding: int) -> cms.CMSAttributes:
    """Unsigned attributes holding a time-stamp token shaped as the service's TSA makes one (with
    pyHanko; its signature placeholder bytes), read from its bytes as a TSA's answer is;
    ``padding`` bytes of content set their length."""
    tsa = HsmCmsSigner(KeyAlgorithm.EC_P256, TSA, [ISSUING, ROOT], sign_digest=lambda digest, algorithm: bytes(72))
    token = asyncio.run(tsa.async_sign_general_data(b"t" * padding, "sha256", detached=False, use_cades=True))
    token = cms.ContentInfo.load(token.dump())  # as a TSA sends it: bytes
    return cms.CMSAttributes([cms.CMSAttribute({"type": "signature_time_stamp_token", "values": [token]})])


def attributes_ending_in(byte: int) -> cms.CMSAttributes:
    """Token attributes whose length (two bytes, in the header's last) ends in ``byte``: each byte
    of padding adds one to every length around it (all past 255 already)."""
    base = len(token_attributes(2000).dump()) - 4
    attributes = token_attributes(2000 + (byte - base) % 256)
    encoded = attributes.dump()
    assert encoded[1] == 0x82 and encoded[3] == byte
    return attributes


class TokenSigner(HsmCmsSigner):
    """The service's signer with given unsigned attributes in place of a TSA's token."""

    def __init__(self, attributes: cms.CMSAttributes):
        super().__init__(KeyAlgorithm.EC_P256, HOLDER, [ISSUING, ROOT])
        self._attributes = attributes

    async def unsigned_attrs(self, *args, **kwargs):
        return self._attributes


def package(signer: Signer) -> cms.ContentInfo:
    """A dry-run signature (placeholder bytes: no key is needed) packaged and encoded."""
    signed = asyncio.run(signer.async_sign(hashlib.sha256(b"document").digest(), "sha256", use_pades=True,
                                           dry_run=True, signed_attr_settings=PdfCMSSignedAttributes(signing_time=NOW)))
    signed.dump()
    return signed


class PyhankoTokenSigner(TokenSigner):
    """The same, packaged by pyHanko alone."""

    _package_signature = Signer._package_signature


def calls(work) -> int:
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1
    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


def test_unsigned_attributes_whose_length_ends_in_0x80_cost_no_more_than_others():
    ordinary, awkward = TokenSigner(attributes_ending_in(0x7F)), TokenSigner(attributes_ending_in(0x80))
    ordinary_calls = calls(lambda: package(ordinary))
    awkward_calls = calls(lambda: package(awkward))
    assert awkward_calls < 2 * ordinary_calls, (awkward_calls, ordinary_calls)


@pytest.mark.parametrize("ending", [0x7F, 0x00])
def test_the_package_has_the_bytes_pyhanko_writes(ending):
    attributes = attributes_ending_in(ending)
    assert package(TokenSigner(attributes)).dump() == package(PyhankoTokenSigner(attributes)).dump()


def test_a_package_with_attributes_of_such_a_length_is_der_and_carries_them():
    # pyHanko's own packaging of it takes seconds: compared with the bytes of its parts instead.
    attributes = attributes_ending_in(0x80)
    encoded = package(TokenSigner(attributes)).dump()
    read = cms.ContentInfo.load(encoded, strict=True)  # nothing left over
    signer_info = read["content"]["signer_infos"][0]
    assert signer_info["unsigned_attrs"].native == cms.CMSAttributes.load(attributes.dump()).native
    bare = package(TokenSigner(None))["content"]["signer_infos"][0]
    assert [signer_info[field].dump() for field in ("sid", "signed_attrs", "signature")] == \
        [bare[field].dump() for field in ("sid", "signed_attrs", "signature")]
