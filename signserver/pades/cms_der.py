"""signed_data: a signature's CMS SignedData encoded from its parts, each part encoded once.

asn1crypto (1.5.1, the latest release) takes a definite length whose last byte is 0x80 for an
indefinite one, and encodes a value with such a header again, with everything beneath it, each
time it is written; a value built in place (as pyHanko builds the SignedData around a SignerInfo)
writes each child several times at every level. A signature whose unsigned attributes (its
time-stamp token, about 2.7 kB) were, say, 2,688 bytes long was therefore encoded again some 250
times: 6 s of CPU instead of 5 ms, for about one signature in five whose token fell on such a
length (and for every signature, were its signed attributes to fall on one). Here each part is
encoded once and the structure around the parts is written as bytes; the result, read back, is
written from those bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from asn1crypto import cms, x509

_SEQUENCE, _SET = 0x30, 0x31
_EXPLICIT_0, _IMPLICIT_0, _IMPLICIT_1 = 0xA0, 0xA0, 0xA1


def signed_data(*, version: str, signer_info: cms.SignerInfo, unsigned_attrs: cms.CMSAttributes | None,
                certificates: Iterable[x509.Certificate],
                encap_content_info: cms.EncapsulatedContentInfo | dict | None) -> cms.ContentInfo:
    """The ContentInfo of a SignedData (RFC 5652 5.1) of ``version`` with one signer,
    ``signer_info`` (without unsigned attributes) and ``unsigned_attrs``, carrying
    ``certificates``: what pyHanko's packaging writes, the same bytes."""
    if not isinstance(encap_content_info, cms.EncapsulatedContentInfo):
        encap_content_info = cms.EncapsulatedContentInfo(encap_content_info or {"content_type": "data"})
    signer = _tlv(_SEQUENCE, b"".join(_signer_info_fields(signer_info)) + (
        b"" if unsigned_attrs is None else _tlv(_IMPLICIT_1, _set_of(_attribute(a) for a in unsigned_attrs))))
    content = _tlv(_SEQUENCE, b"".join((
        cms.CMSVersion(version).dump(),
        _tlv(_SET, signer_info["digest_algorithm"].dump()),
        encap_content_info.dump(),
        _tlv(_IMPLICIT_0, _set_of(c.dump() for c in certificates)),
        _tlv(_SET, signer))))
    return cms.ContentInfo.load(_tlv(_SEQUENCE, cms.ContentType("signed_data").dump() + _tlv(_EXPLICIT_0, content)))


def _signer_info_fields(signer_info: cms.SignerInfo) -> Iterable[bytes]:
    """The encodings of ``signer_info``'s fields but the unsigned attributes, in order, each
    encoded on its own (its signed attributes carry their [0] tag)."""
    for name in ("version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm", "signature"):
        value = signer_info[name]
        if name == "signed_attrs":
            yield _tlv(_IMPLICIT_0, _set_of(_attribute(a) for a in value))
        else:
            yield value.dump()


def _attribute(attribute: cms.CMSAttribute) -> bytes:
    """An Attribute (RFC 5652 5.3) encoded from its parts; each value encodes itself."""
    return _tlv(_SEQUENCE, attribute["type"].dump() + _tlv(_SET, _set_of(value.dump() for value in attribute["values"])))


def _set_of(encodings: Iterable[bytes]) -> bytes:
    """The contents of a DER SET OF: its members' encodings in ascending order (X.690 11.6)."""
    return b"".join(sorted(encodings))


def _tlv(tag: int, contents: bytes) -> bytes:
    size = len(contents)
    if size < 0x80:
        return bytes((tag, size)) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + contents
