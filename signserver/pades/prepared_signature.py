"""PreparedSignature: a signature placed in a PDF but not yet made, as plain data.

pyHanko's interrupted signing keeps a half-done signature as data: the digest over the document's
/ByteRange and where the signature goes (``PreparedByteRangeDigest``), and what to do once it is
in place (``PostSignInstructions``: the validation data for the DSS of B-LT and B-LTA, and whether
a document time-stamp follows). With the prepared PDF's bytes, that is all any worker of any node
needs to finish the signature (``PdfTBSDocument.async_finish_signing``): nothing of the process
that prepared it.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass

from asn1crypto import crl, ocsp, x509
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PostSignInstructions, PreSignValidationStatus
from pyhanko_certvalidator.authority import CertTrustAnchor
from pyhanko_certvalidator.path import ValidationPath

from signserver.errors import DataCorrupted


@dataclass(frozen=True)
class PostSignData:
    """pyHanko's post-signature instructions as data. The settings not kept here are pyHanko's
    defaults, as the preparation leaves them (DSS settings, the time-stamp's field name, no file
    credential: encrypted documents are refused before)."""

    validation_paths: tuple[tuple[bytes, ...], ...]  # each path's certificates (DER), its root first
    crls: tuple[bytes, ...]  # DER, to embed in the DSS
    ocsps: tuple[bytes, ...]  # DER, to embed in the DSS
    document_timestamp: bool  # B-LTA: a document time-stamp follows the DSS
    timestamp_md_algorithm: str | None
    embed_roots: bool
    strict: bool  # how the signed document is read again for the DSS (as it was read to prepare)

    @classmethod
    def of(cls, instructions: PostSignInstructions | None) -> "PostSignData | None":
        if instructions is None:
            return None
        validation = instructions.validation_info
        return cls(validation_paths=tuple(tuple(certificate.dump() for certificate in path)
                                          for path in validation.validation_paths),
                   crls=tuple(item.dump() for item in validation.crls_to_embed),
                   ocsps=tuple(item.dump() for item in validation.ocsps_to_embed),
                   document_timestamp=instructions.timestamper is not None,
                   timestamp_md_algorithm=instructions.timestamp_md_algorithm,
                   embed_roots=instructions.embed_roots, strict=instructions.strict)

    def instructions(self, timestamper) -> PostSignInstructions:
        """pyHanko's instructions again, with ``timestamper`` for the document time-stamp (B-LTA)."""
        paths = [_path(certificates) for certificates in self.validation_paths]
        validation = PreSignValidationStatus(
            signer_path=paths[0], validation_paths=paths,
            crls_to_embed=[crl.CertificateList.load(item) for item in self.crls],
            ocsps_to_embed=[ocsp.OCSPResponse.load(item) for item in self.ocsps])
        return PostSignInstructions(validation_info=validation,
                                    timestamper=timestamper if self.document_timestamp else None,
                                    timestamp_md_algorithm=self.timestamp_md_algorithm,
                                    embed_roots=self.embed_roots, strict=self.strict)

    def to_json(self) -> str:
        encode = lambda items: [base64.b64encode(item).decode("ascii") for item in items]  # noqa: E731
        return json.dumps({"validation_paths": [encode(path) for path in self.validation_paths],
                           "crls": encode(self.crls), "ocsps": encode(self.ocsps),
                           "document_timestamp": self.document_timestamp,
                           "timestamp_md_algorithm": self.timestamp_md_algorithm,
                           "embed_roots": self.embed_roots, "strict": self.strict}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "PostSignData":
        """Raises: DataCorrupted: not what :meth:`to_json` writes."""
        try:
            data = json.loads(text)
            decode = lambda items: tuple(base64.b64decode(item, validate=True) for item in items)  # noqa: E731
            paths = tuple(decode(path) for path in data["validation_paths"])
            if not paths or not all(paths):
                raise ValueError("no validation path, or an empty one")
            return cls(validation_paths=paths, crls=decode(data["crls"]), ocsps=decode(data["ocsps"]),
                       document_timestamp=bool(data["document_timestamp"]),
                       timestamp_md_algorithm=data["timestamp_md_algorithm"],
                       embed_roots=bool(data["embed_roots"]), strict=bool(data["strict"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataCorrupted(f"a prepared document's post-signature data is unreadable: {exc}") from None


def _path(certificates: tuple[bytes, ...]) -> ValidationPath:
    """A validation path from its certificates, root first (the DSS takes every certificate)."""
    loaded = [x509.Certificate.load(item) for item in certificates]
    root, rest = loaded[0], loaded[1:]
    return ValidationPath(CertTrustAnchor(root), rest[:-1], rest[-1] if rest else None)


@dataclass(frozen=True)
class PreparedSignature:
    """What finishing a prepared document's signature takes, apart from its bytes, the holder's
    key and the time-stamping authority."""

    document_digest: bytes  # over the /ByteRange: what the holder authorises
    reserved_region_start: int  # where the signature's /Contents lies in the prepared document
    reserved_region_end: int
    md_algorithm: str
    signing_time: datetime.datetime  # the preparation's (the signature dictionary's /M says it)
    post_sign: PostSignData | None  # B-LT and B-LTA

    def byte_range_digest(self) -> PreparedByteRangeDigest:
        return PreparedByteRangeDigest(document_digest=self.document_digest,
                                       reserved_region_start=self.reserved_region_start,
                                       reserved_region_end=self.reserved_region_end)
