"""Translation between the generated protobuf messages and the client's dataclasses. Private:
generated types never leave the client's package."""

from __future__ import annotations

import datetime

from signserver.client.models import (
    Credential,
    CredentialInfo,
    PdfOptions,
    SignatureReport,
    Verification,
)
from signserver.v1 import document_pb2, signing_pb2

HASH_ALGORITHMS = {
    "sha256": signing_pb2.HASH_ALGORITHM_SHA256,
    "sha384": signing_pb2.HASH_ALGORITHM_SHA384,
    "sha512": signing_pb2.HASH_ALGORITHM_SHA512,
}


def moment(timestamp, present: bool = True) -> datetime.datetime | None:
    """A protobuf Timestamp as an aware UTC datetime; None when unset."""
    if not present or (timestamp.seconds == 0 and timestamp.nanos == 0):
        return None
    return timestamp.ToDatetime(tzinfo=datetime.timezone.utc)


def credential(message: signing_pb2.Credential) -> Credential:
    return Credential(id=message.id, account=message.account, key_algorithm=message.key_algorithm,
                      status=message.status, description=message.description,
                      created_at=moment(message.created_at, message.HasField("created_at")))


def credential_info(message: signing_pb2.CredentialInfo) -> CredentialInfo:
    # `certificates` is read by name: a server built before the field existed sends none, and
    # neither does a client built against such a proto.
    return CredentialInfo(credential=credential(message.credential), public_key_der=message.public_key,
                          signature_algorithms=tuple(message.signature_algorithms),
                          certificates=tuple(getattr(message, "certificates", ())))


def header(options: PdfOptions, credential_id: str, account: str = "", password: str = "",
           otp: str = "") -> document_pb2.SignPdfHeader:
    stamp = options.stamp
    x1, y1, x2, y2 = stamp.rectangle or (0.0, 0.0, 0.0, 0.0)
    return document_pb2.SignPdfHeader(
        account=account, password=password, otp=otp, credential_id=credential_id, level=options.level,
        stamp=document_pb2.Stamp(
            invisible=stamp.invisible, caption=stamp.caption, time_zone=stamp.time_zone, reason=stamp.reason,
            location=stamp.location, verification_url=stamp.verification_url, seal_image=stamp.seal_image,
            field_name=stamp.field_name, page=stamp.page, x1=x1, y1=y1, x2=x2, y2=y2))


def verification(message: document_pb2.VerifyPdfResponse) -> Verification:
    return Verification(verdict=message.verdict, reason=message.reason,
                        signatures=tuple(_report(r) for r in message.signatures))


def _report(message: document_pb2.SignatureReport) -> SignatureReport:
    return SignatureReport(
        field=message.field, signer=message.signer, intact=message.intact, valid=message.valid,
        trusted=message.trusted, signing_time=message.signing_time, timestamp=message.timestamp,
        timestamp_valid=message.timestamp_valid, level=message.level, revocation=message.revocation,
        coverage=message.coverage, modified_after_signing=message.modified_after_signing,
        modification_allowed=message.modification_allowed, summary=message.summary,
        modification_level=message.modification_level, verdict=message.verdict, reason=message.reason,
        contents_sha256=message.contents_sha256)
