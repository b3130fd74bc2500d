"""The values the client takes and returns: plain dataclasses, never generated protobuf types."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

HashAlgorithmName = Literal["sha256", "sha384", "sha512"]
PadesLevelName = Literal["B-B", "B-T", "B-LT", "B-LTA"]


@dataclass(frozen=True)
class Credential:
    """A holder's signing key as the server lists it."""

    id: str
    account: str
    key_algorithm: str  # e.g. "rsa-2048", "ec-p256"
    status: str  # "active" or "disabled"
    description: str
    created_at: datetime.datetime | None


@dataclass(frozen=True)
class CredentialInfo:
    """One credential in full: its public key and, once it has a certificate, the chain."""

    credential: Credential
    public_key_der: bytes  # SubjectPublicKeyInfo
    signature_algorithms: tuple[str, ...]  # e.g. "rsa-pss-sha256", "ecdsa-sha256"
    # DER: the credential's newest certificate, then the issuing CA, then the root. Empty before
    # the first certificate, and from a server that does not send certificates.
    certificates: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Authorization:
    """A signature activation token (SAD): bound to one credential and the digests authorised,
    each signable once, until ``expires_at``."""

    activation_token: str = field(repr=False)  # a secret: kept out of logs and tracebacks
    credential_id: str
    expires_at: datetime.datetime | None
    signatures: int


@dataclass(frozen=True)
class Stamp:
    """How the signature shows on the page. Empty values take the server's defaults (caption
    "Assinatura digital", time zone Asia/Macau, the last page, the bottom-left corner)."""

    invisible: bool = False
    caption: str = ""
    time_zone: str = ""
    reason: str = ""
    location: str = ""
    verification_url: str = ""  # adds a QR code pointing here
    seal_image: bytes = field(default=b"", repr=False)  # PNG or JPEG behind the text
    field_name: str = ""
    page: int = 0  # 1-based; 0: the last page; negative counts from the end
    # Points from the bottom-left corner of the page as displayed; None: the default rectangle.
    rectangle: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class PdfOptions:
    """The signature's PAdES level (empty: the server's default, B-LT) and its stamp."""

    level: PadesLevelName | Literal[""] = ""
    stamp: Stamp = Stamp()


@dataclass(frozen=True)
class SignedDocument:
    """What a signing call returned: the signed PDF's size and SHA-256 (checked against the bytes
    received)."""

    size: int
    sha256: bytes


@dataclass(frozen=True)
class PreparedSignature:
    """Step 1 of the two-step flow: the digest the holder must authorise, for this credential,
    before ``expires_at``. Any worker or node of the service completes it."""

    document_id: str
    digest: bytes  # SHA-256 over the signed byte ranges
    credential_id: str
    expires_at: datetime.datetime | None


@dataclass(frozen=True)
class SignatureReport:
    """One signature of a verified PDF (pyHanko's validation, as the server reports it)."""

    field: str
    signer: str
    intact: bool
    valid: bool
    trusted: bool
    signing_time: str
    timestamp: str
    timestamp_valid: bool
    level: str
    revocation: str
    coverage: str
    modified_after_signing: bool
    modification_allowed: bool
    summary: str
    modification_level: str
    verdict: bool
    reason: str
    contents_sha256: bytes = b""  # of the signature's /Contents as stored; empty from a server that does not say


@dataclass(frozen=True)
class Verification:
    """A PDF's verdict: true only when it has signatures and every one holds. Trust this, not the
    details."""

    verdict: bool
    reason: str
    signatures: tuple[SignatureReport, ...]


# The registration authority's values (CertificateClient)


@dataclass(frozen=True)
class Evidence:
    """What the RA checked before a request, sent with it and recorded in the core's audit log.

    ``registry_match`` is the identity registry's verdict (e.g. "match"), ``face_score`` the face
    comparison's score from 0 to 1 (None: no photo compared), ``email_verifications`` each address
    verified with a code and when, ``application_sha256`` the signed application's digest, and
    ``reference`` the RA's own id of the renewal or request."""

    registry_match: str = ""
    face_score: float | None = None
    email_verifications: tuple[tuple[str, datetime.datetime], ...] = ()
    application_sha256: bytes | None = None
    reference: str = ""


@dataclass(frozen=True)
class NewAccount:
    """An account for the RA to enrol: the holder's data, first password and (optional)
    revocation phrase. ``kind`` is "personal", "corporate" or "government"; ``given_name`` and
    ``surname`` go together."""

    account: str
    holder_name: str
    emails: tuple[str, ...]
    password: str = field(repr=False)
    kind: Literal["personal", "corporate", "government"] = "personal"
    organisation: str = ""
    department: str = ""
    title: str = ""
    revocation_phrase: str = field(default="", repr=False)
    key_algorithm: str = ""  # empty: the server's default, "rsa-2048"
    recovery_code: bool = True  # False: the holder chose no recovery code
    given_name: str = ""
    surname: str = ""


@dataclass(frozen=True)
class NewAccountResult:
    """The new account, its first credential and what the holder is given once: the OTP URI and
    (unless the holder chose none) the recovery code."""

    account: str
    credential_id: str
    otp_uri: str = field(repr=False)
    recovery_code: str = field(repr=False)  # "" when the holder chose none


@dataclass(frozen=True)
class HolderIdentity:
    """A holder whose account, password and OTP the core accepted (CertificateClient.authenticate_holder):
    the account as it records it. ``given_name`` and ``surname`` are empty when not recorded;
    ``password_changed_at`` is when the password just checked was set (HolderStanding tells later
    whether it still is)."""

    account: str
    holder_name: str
    given_name: str
    surname: str
    emails: tuple[str, ...]
    password_changed_at: datetime.datetime | None = None


@dataclass(frozen=True)
class HolderStanding:
    """Whether a holder's sign-in still stands (CertificateClient.holder_standing): when the
    account's password was last set, by whatever route, and whether the account is disabled."""

    account: str
    password_changed_at: datetime.datetime | None
    disabled: bool


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate as the CA keeps it. ``status`` is "valid", "expired" or "revoked"."""

    serial: str  # hexadecimal
    profile: str
    account: str  # "" for a certificate not issued to a holder
    credential_id: str  # "" when the key is outside the server
    subject: str
    not_before: datetime.datetime | None
    not_after: datetime.datetime | None
    status: str
    revoked_at: datetime.datetime | None
    revocation_reason: str
    predecessor_serial: str
    certificate_der: bytes = field(repr=False)


@dataclass(frozen=True)
class CertificatePage:
    """One page of a certificate listing; ``next_page_token`` reads the next ("" on the last)."""

    certificates: list[CertificateRecord]
    next_page_token: str
