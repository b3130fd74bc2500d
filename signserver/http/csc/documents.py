"""signatures/signDoc, signatures/timestamp and the asynchronous mode (signatures/signPolling).

signDoc signs whole PDF documents (PAdES, ``signature_format`` "P") as gRPC's SignPdf does: at
the conformance level asked, with the visible stamp's options, authorised either by a SAD the
holder had issued (credentials/authorize) for the SHA-256 of each document, or by the holder's
factors in the same call (``authData``: the password as PIN and the OTP; for applications allowed
one-call signing, as gRPC's one-call SignPdf).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import string
from typing import Literal

from asn1crypto import algos, tsp
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from signserver.accounts.model import Application, Credential
from signserver.errors import InvalidArgument, PermissionDenied, UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.http.call_metrics import method_label
from signserver.http.csc import algorithms
from signserver.http.csc.auth import calling_application
from signserver.http.csc.context import CscContext, csc_context
from signserver.http.csc.credentials import check_signature_qualifier
from signserver.http.csc.errors import credential_lookup
from signserver.http.csc.operations import keep_seconds, not_ready, poll_operation, start_operation
from signserver.http.csc.signatures import sign_algo_params
from signserver.pades.document import PadesLevel
from signserver.pades.signable import check_signable
from signserver.pades.stamp import (BOX_FIELD, DEFAULT_BOX, FIELD_NAME_FIELD, MAX_TEXT, PAGE_FIELD, SEAL_FIELD,
                                    TIME_ZONE_FIELD, URL_FIELD, StampOptions)
from signserver.secret import Secret

# Request bodies are bounded for the whole app (see limits.BodyLimit): one largest document.
router = APIRouter(tags=["signatures"])

# CSC's conformance levels (both spellings the specification lists) and gRPC's PAdES levels.
LEVELS = {"ades-b-b": PadesLevel.B_B, "ades-b": PadesLevel.B_B, "ades-b-t": PadesLevel.B_T, "ades-t": PadesLevel.B_T,
          "ades-b-lt": PadesLevel.B_LT, "ades-lt": PadesLevel.B_LT, "ades-b-lta": PadesLevel.B_LTA,
          "ades-lta": PadesLevel.B_LTA}
MAX_DOCUMENTS = 16  # per call; together within the body bound (one largest document)
MAX_SEAL_IMAGE = 1 << 20
SHA256_OID = "2.16.840.1.101.3.4.2.1"
# How a PAdES signature is made for a key of each family (pyHanko's CMS with SHA-256, see
# signserver.pades.cms_signer): the only signAlgo signDoc serves for it.
PADES_ALGORITHMS = {"rsa": SignatureAlgorithm.RSA_PKCS1V15_SHA256, "ec": SignatureAlgorithm.ECDSA_SHA256}
TIMESTAMP_DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64}
MAX_TIMESTAMP_HASH_TEXT = 200  # characters of base64: more than the largest digest takes
MAX_NONCE_HEX = 64  # 256 bits


# The stamp's options as the domain names them in a refusal, and as this API does.
CSC_STAMP_NAMES = {SEAL_FIELD: "sealImage", URL_FIELD: "verificationURL", FIELD_NAME_FIELD: "fieldName",
                   PAGE_FIELD: "page", BOX_FIELD: "box", TIME_ZONE_FIELD: "timeZone"}


class AuthDatum(BaseModel):
    id: str = Field(max_length=32, description='"PIN" (the holder\'s password) or "OTP"')
    value: str = Field(max_length=1024)


class Stamp(BaseModel):
    """The visible stamp, as gRPC's SignPdf offers it (signserver's extension of signDoc)."""

    visible: bool = Field(True, description="false: an invisible signature")
    caption: str | None = Field(None, max_length=MAX_TEXT, description="the stamp's second line; the server's default if absent")
    timeZone: str | None = Field(None, max_length=64, description="IANA zone of the signing time shown; the server's default if absent")
    reason: str = Field("", max_length=MAX_TEXT)
    location: str = Field("", max_length=MAX_TEXT)
    verificationURL: str = Field("", max_length=2000, description="adds a QR code to this address")
    sealImage: str | None = Field(None, max_length=4 * MAX_SEAL_IMAGE // 3 + 4,
                                  description="base64 PNG shown behind the text")
    fieldName: str = Field("", max_length=MAX_TEXT, description="an existing empty signature field, or a new field's name")
    page: int = Field(0, description="1 is the first page, -1 the last; 0 (default) the last")
    box: list[float] | None = Field(None, min_length=4, max_length=4,
                                    description="x1, y1, x2, y2 in points from the bottom-left corner")


class DocumentToSign(BaseModel):
    document: str = Field(description="the whole PDF, base64")
    signature_format: str = Field(description='"P" (PAdES): the only format served')
    conformance_level: str = Field("Ades-B-B", description="Ades-B-B, Ades-B-T, Ades-B-LT or Ades-B-LTA")
    signAlgo: str | None = Field(None, max_length=64,
                                 description="must fit the credential's key, whose usual scheme (with SHA-256) signs")
    signAlgoParams: str | None = None
    signed_envelope_property: str | None = Field(None, description='"Certification" is not served; approval signatures only')
    signed_props: list | None = Field(None, description="not served: the stamp's reason and location are signed")
    stamp: Stamp | None = None


class SignDocRequest(BaseModel):
    credentialID: str = Field(max_length=64)
    SAD: str | None = Field(None, max_length=1024, description="from credentials/authorize, for the SHA-256 of each document")
    authData: list[AuthDatum] | None = Field(None, max_length=4, description="the holder's PIN and OTP instead of a SAD")
    documents: list[DocumentToSign] | None = Field(None, max_length=MAX_DOCUMENTS)
    documentDigests: list[dict] | None = Field(None, description="not served: send whole documents")
    operationMode: Literal["S", "A"] = "S"
    validity_period: int | None = Field(None, description="milliseconds an asynchronous outcome is kept (at most 600000)")
    response_uri: str | None = Field(None, description="not served: poll with signatures/signPolling")
    clientData: str | None = Field(None, max_length=1024)
    signatureQualifier: str | None = Field(None, max_length=64, description='"eu_eidas_aes" (advanced electronic '
                                          'signatures) or absent; any other is refused')
    returnValidationInfo: bool = Field(False, description="not served (info: validationInfo false); B-LT and "
                                                         "B-LTA documents carry their validation data")


class TimestampRequest(BaseModel):
    hash: str = Field(max_length=MAX_TIMESTAMP_HASH_TEXT, description="the base64 hash to time-stamp")
    hashAlgo: str | None = Field(None, max_length=64, description="its algorithm's OID: SHA-256, SHA-384 or SHA-512")
    hashAlgorithmOID: str | None = Field(None, max_length=64, description="the same, by the name the other methods use")
    nonce: str | None = Field(None, max_length=MAX_NONCE_HEX, description="hexadecimal; echoed in the token")
    clientData: str | None = Field(None, max_length=1024)


class PollRequest(BaseModel):
    responseID: str | None = Field(None, max_length=100, description="the responseID signHash or signDoc answered")
    requestID: str | None = Field(None, max_length=100, description="the same, by the name the CSC API gives it here")
    clientData: str | None = Field(None, max_length=1024)

    def operation(self) -> str:
        """The operation polled, by either name.

        Raises: InvalidArgument: neither, or two different ones.
        """
        named = {value for value in (self.responseID, self.requestID) if value is not None}
        if len(named) != 1:
            raise InvalidArgument("requestID (the responseID signHash or signDoc answered) is needed, once",
                                  field="requestID")
        return named.pop()


def _base64_length(size: int) -> int:
    """The length of ``size`` bytes in base64 (with padding)."""
    return 4 * ((size + 2) // 3)


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit} bytes"


def _base64(field: str, value: str, limit: int) -> bytes:
    """Raises: InvalidArgument: not base64, empty or over ``limit`` bytes."""
    if len(value) > _base64_length(limit):
        raise InvalidArgument(f"{field} is too large: the limit is {_size(limit)}", field=field)
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{field} is not base64", field=field) from None
    if not decoded:
        raise InvalidArgument(f"{field} is empty", field=field)
    if len(decoded) > limit:
        raise InvalidArgument(f"{field} is too large: the limit is {_size(limit)}", field=field)
    return decoded


def pades_level(conformance_level: str) -> PadesLevel:
    """Raises: InvalidArgument: a level not served."""
    level = LEVELS.get(conformance_level.strip().lower())
    if level is None:
        raise InvalidArgument(f"conformance_level {conformance_level[:40]!r} is not served; one of "
                              "Ades-B-B, Ades-B-T, Ades-B-LT, Ades-B-LTA", field="conformance_level")
    return level


def stamp_options(stamp: Stamp | None, defaults: StampOptions) -> StampOptions:
    """The request's stamp over the server's defaults (as gRPC's SignPdf reads its Stamp).

    Raises: InvalidArgument: a seal image that is not base64.
    """
    if stamp is None:
        return defaults
    page = stamp.page - 1 if stamp.page > 0 else (stamp.page if stamp.page < 0 else -1)
    return StampOptions(
        visible=stamp.visible, caption=stamp.caption or defaults.caption, time_zone=stamp.timeZone or defaults.time_zone,
        reason=stamp.reason, location=stamp.location, verification_url=stamp.verificationURL,
        seal_png=_base64("sealImage", stamp.sealImage, MAX_SEAL_IMAGE) if stamp.sealImage else None,
        field_name=stamp.fieldName, page=page, box=tuple(stamp.box) if stamp.box and any(stamp.box) else DEFAULT_BOX)


def _factors(auth_data: list[AuthDatum]) -> tuple[Secret, str | None]:
    """The password (PIN) and OTP of ``authData``. Raises: InvalidArgument: no PIN, or another id."""
    values: dict[str, str] = {}
    for datum in auth_data:
        name = datum.id.strip().upper()
        if name not in ("PIN", "OTP") or name in values:
            raise InvalidArgument('authData holds one "PIN" and at most one "OTP"', field="authData")
        values[name] = datum.value
    if not values.get("PIN"):
        raise InvalidArgument('authData must hold the holder\'s "PIN" (password)', field="authData")
    return Secret(values["PIN"]), values.get("OTP") or None


def _documents(context: CscContext, request: SignDocRequest) -> list[tuple[str, PadesLevel, StampOptions]]:
    """The documents (still base64: decoding a large one takes a while, so it is left to the
    documents pool), their levels and stamps.

    Raises: InvalidArgument: no documents, digests instead, a format, level or option not
    served, a document too large.
    """
    if request.documentDigests:
        raise InvalidArgument("documentDigests is not served: send whole documents (or use signatures/signHash)",
                              field="documentDigests")
    if not request.documents:
        raise InvalidArgument("documents is required: at least one PDF, base64", field="documents")
    if request.response_uri:
        raise InvalidArgument("response_uri is not served: poll with signatures/signPolling", field="response_uri")
    if request.returnValidationInfo:
        # An answer without the validationInfo asked for would look complete; say so instead.
        raise InvalidArgument("returnValidationInfo is not served: conformance_level Ades-B-LT or Ades-B-LTA "
                              "puts the validation data in the signed document", field="returnValidationInfo")
    limit = context.service.config.pades.max_document_mb * 1024 * 1024
    defaults = context.service.pades.default_stamp()
    parsed = []
    for document in request.documents:
        if document.signature_format.strip().upper() != "P":
            raise InvalidArgument('signature_format must be "P" (PAdES): only PDF documents are signed',
                                  field="signature_format")
        if document.signed_envelope_property not in (None, "", "Revision"):
            raise InvalidArgument("signed_envelope_property: only approval signatures (Revision) are made",
                                  field="signed_envelope_property")
        if document.signed_props:
            raise InvalidArgument("signed_props is not served: the stamp's reason and location are the signed "
                                  "attributes a caller chooses", field="signed_props")
        if len(document.document) > _base64_length(limit):
            raise InvalidArgument(f"document is too large: the limit is {limit // (1024 * 1024)} MB", field="document")
        parsed.append((document.document, pades_level(document.conformance_level),
                       stamp_options(document.stamp, defaults)))
    return parsed


def _asked_algorithms(documents: list[DocumentToSign]) -> list[tuple[str, SignatureAlgorithm]]:
    """Each ``signAlgo`` asked (with its ``signAlgoParams``), as the algorithm it names.

    Raises: UnsupportedAlgorithm, InvalidArgument (signAlgoParams not base64).
    """
    return [(document.signAlgo, algorithms.signature_algorithm(document.signAlgo, SHA256_OID,
                                                                sign_algo_params(document.signAlgoParams)))
            for document in documents if document.signAlgo]


def _check_sign_algo_served(documents: list[DocumentToSign]) -> None:
    """Refuse a ``signAlgo`` no credential's PAdES signature is made with (RSASSA-PSS, another
    digest than SHA-256): said of the request alone, nothing of any credential.

    Raises: UnsupportedAlgorithm, InvalidArgument (signAlgoParams not base64).
    """
    served = {oid: a for oid, a in algorithms.SIGNATURE_OIDS.items() if a in PADES_ALGORITHMS.values()}
    for sign_algo, asked in _asked_algorithms(documents):
        if asked not in served.values():
            raise UnsupportedAlgorithm(
                f"signAlgo {sign_algo} is not how signDoc signs: PAdES documents are signed with the scheme of "
                f"the credential's key with SHA-256 ({', '.join(served)}); sign hashes with signatures/signHash "
                "for other algorithms")


def _check_sign_algo(context: CscContext, application: Application, credential_id: str,
                     documents: list[DocumentToSign]) -> Credential:
    """The credential, once every ``signAlgo`` asked (with its ``signAlgoParams``) is the very
    algorithm a PAdES signature is made with here: the scheme of the credential's key with
    SHA-256 (RSA PKCS#1 v1.5, ECDSA). Another one (RSASSA-PSS, another digest, another key's) is
    refused: a document is never signed with an algorithm other than the one asked.

    Raises: UnsupportedAlgorithm, InvalidArgument (signAlgoParams not base64), NotFound,
        CredentialUnusable.
    """
    credential = context.service.credentials.credential(application, credential_id)
    made_with = PADES_ALGORITHMS.get(credential.key_algorithm.family)
    for sign_algo, asked in _asked_algorithms(documents):
        if asked is not made_with:
            served = next((oid for oid, a in algorithms.SIGNATURE_OIDS.items() if a is made_with), None)
            raise UnsupportedAlgorithm(
                f"signAlgo {sign_algo} is not how signDoc signs with this credential: its "
                f"{credential.key_algorithm.family} key signs PAdES documents with {served or 'no algorithm'} "
                "(sign hashes with signatures/signHash for other algorithms)")
    return credential


def _decoded_documents(context: CscContext, encoded: list[tuple[str, PadesLevel, StampOptions]],
                       ) -> list[tuple[bytes, PadesLevel, StampOptions]]:
    """The documents decoded (blocking: the documents pool).

    Raises: InvalidArgument: a document not base64, empty, too large or twice in the request.
    """
    limit = context.service.config.pades.max_document_mb * 1024 * 1024
    documents = [(_base64("document", content, limit), level, stamp) for content, level, stamp in encoded]
    digests = [hashlib.sha256(content).digest() for content, _, _ in documents]
    for index, digest in enumerate(digests):
        if digest in digests[:index]:
            raise InvalidArgument(f"documents[{index}] is documents[{digests.index(digest)}] again: a SAD "
                                  "authorises each document once", field="documents")
    return documents


def _check_signable(context: CscContext, documents: list[tuple[bytes, PadesLevel, StampOptions]],
                    holder_name: str | None) -> None:
    """Each document signable with its stamp (see check_signable: with ``holder_name`` None, all
    but the stamp's text, which names the holder).

    Raises: InvalidArgument.
    """
    font, now = context.service.pades.font(), context.service.clock.now()
    for index, (content, level, stamp) in enumerate(documents):
        try:
            check_signable(io.BytesIO(content), stamp, holder_name, font, now, level)
        except InvalidArgument as refused:
            if refused.field in CSC_STAMP_NAMES:
                # CSC's name for the field, in the description: CSC's error answer has no place for it.
                named = CSC_STAMP_NAMES[refused.field]
                refused = InvalidArgument(f"{named}: {refused}", field=named)
            if len(documents) == 1:
                raise refused from None
            raise InvalidArgument(f"documents[{index}]: {refused}", field="documents") from None


def _ready_documents(context: CscContext, application: Application, request: SignDocRequest,
                     encoded: list[tuple[str, PadesLevel, StampOptions]]) -> list[tuple[bytes, PadesLevel, StampOptions]]:
    """The documents decoded and checked signable as asked (blocking: the documents pool), before
    any SAD is spent: see signable.py.

    Raises: InvalidArgument (a document not base64, empty, twice in the request, or not
        signable as asked), UnsupportedAlgorithm, NotFound, CredentialUnusable.
    """
    documents = _decoded_documents(context, encoded)
    credential = _check_sign_algo(context, application, request.credentialID, request.documents or [])
    _check_signable(context, documents, context.service.credentials.holder_name(credential))
    return documents


def _ready_before_factors(context: CscContext, request: SignDocRequest,
                          encoded: list[tuple[str, PadesLevel, StampOptions]],
                          ) -> list[tuple[bytes, PadesLevel, StampOptions]]:
    """With authData: the documents decoded and checked as far as they can be without the
    credential (blocking: the documents pool), so that a bad one does not cost the holder an OTP;
    nothing here looks the credential up, so nothing tells whether it exists, or its state,
    before the factors are checked.

    Raises: InvalidArgument, UnsupportedAlgorithm (a signAlgo no PAdES signature is made with).
    """
    documents = _decoded_documents(context, encoded)
    _check_sign_algo_served(request.documents or [])
    _check_signable(context, documents, None)
    return documents


def _ready_after_factors(context: CscContext, application: Application, request: SignDocRequest,
                         documents: list[tuple[bytes, PadesLevel, StampOptions]]) -> None:
    """With authData, once the factors are right: what depends on the credential, the signAlgo
    of its key and the stamp's text, which names its holder (blocking: the documents pool).

    Raises: InvalidArgument, UnsupportedAlgorithm, NotFound, CredentialUnusable.
    """
    credential = _check_sign_algo(context, application, request.credentialID, request.documents or [])
    stamped = [document for document in documents if document[2].visible]  # the rest was checked whole
    if stamped:
        _check_signable(context, stamped, context.service.credentials.holder_name(credential))


def _sign_all(context: CscContext, application: Application, credential_id: str, token: Secret,
              documents: list[tuple[bytes, PadesLevel, StampOptions]]) -> list[str]:
    """Spend the token on every document's SHA-256 at once, then sign each (blocking: the
    documents pool). Raises: as SignService.sign_pdfs_with_activation."""
    destinations = [io.BytesIO() for _ in documents]
    context.service.sign_pdfs_with_activation(
        application, credential_id, token,
        [(io.BytesIO(content), destination, level, stamp)
         for (content, level, stamp), destination in zip(documents, destinations)])
    return [base64.b64encode(destination.getvalue()).decode("ascii") for destination in destinations]


def _check_and_sign_all(context: CscContext, application: Application, request: SignDocRequest, token: Secret,
                        documents: list[tuple[bytes, PadesLevel, StampOptions]]) -> list[str]:
    """With authData, once the factors were right: what depends on the credential (see
    _ready_after_factors), then :func:`_sign_all` (blocking: the documents pool)."""
    _ready_after_factors(context, application, request, documents)
    return _sign_all(context, application, request.credentialID, token, documents)


def _authorisation(application: Application, request: SignDocRequest) -> tuple[Secret, str | None] | None:
    """The holder's factors of ``authData`` (None with a SAD), checked before any work.

    Raises: InvalidArgument (both or neither, a malformed authData), PermissionDenied (authData
        by an application not allowed one-call signing).
    """
    if request.SAD and request.authData:
        raise InvalidArgument("send either a SAD or authData, not both", field="SAD")
    if request.SAD:
        return None
    if not request.authData:
        raise InvalidArgument("a SAD (from credentials/authorize) or authData (PIN and OTP) is required",
                              field="SAD")
    if not application.one_call_signing:
        # The rule of gRPC's one-call SignPdf: the holder's factors travel with the document
        # only for applications allowed it.
        raise PermissionDenied(f"application {application.name!r} may only use the two-step flow "
                               "(credentials/authorize, then signDoc with the SAD)")
    return _factors(request.authData)


async def sign_documents(context: CscContext, application: Application, request: SignDocRequest,
                         encoded: list[tuple[str, PadesLevel, StampOptions]]) -> dict:
    """The synchronous answer of signDoc, for the request's documents (see _documents). Every
    check of what the client sent runs before the SAD is spent. With authData, those that need
    no credential run before the holder's factors are checked (a bad document costs no OTP), and
    those that depend on the credential (its key's signAlgo, the stamp's text naming its holder)
    only after: the credential is looked up first by the factors' check, which refuses an
    unknown one like a wrong factor, counted alike (as credentials/authorize). The documents
    work takes the application's turn at the documents pool.

    Raises: InvalidArgument, PermissionDenied (authData by an application not allowed one-call
        signing), AuthenticationFailed, AccountLocked, ActivationRefused, CredentialUnusable,
        NotFound (with a SAD), UnsupportedAlgorithm, ServerBusy, HsmError.
    """
    factors = _authorisation(application, request)
    async with context.document_shares.turn(application.id):
        if factors is None:
            with credential_lookup():
                documents = await context.documents.run(_ready_documents, context, application, request, encoded)
            token = Secret(request.SAD or "")
        else:
            # The factors first, through credentials/authorize's path and counted as it counts:
            # an unknown credential, one of an account the application may not serve, and a wrong
            # factor are refused alike, and the credential's state is told only to whoever has
            # its holder's factors. Only what needs no credential is checked before.
            documents = await context.documents.run(_ready_before_factors, context, request, encoded)
            digests = [hashlib.sha256(content).digest() for content, _, _ in documents]
            authorization = await context.accounts.run(
                context.service.authorize_credential, application, request.credentialID, *factors,
                HashAlgorithm.SHA256, digests)
            token = Secret(authorization.token)
        with credential_lookup():
            if factors is None:
                signed = await context.documents.run(_sign_all, context, application, request.credentialID, token,
                                                     documents)
            else:
                signed = await context.documents.run(_check_and_sign_all, context, application, request, token,
                                                     documents, continues_work=True)
    return {"DocumentWithSignature": signed}


@router.post("/signatures/signDoc", summary="Sign whole PDF documents (PAdES)", responses={
    200: {"description": 'DocumentWithSignature: the signed PDFs, base64; with operationMode "A", responseID'}})
async def sign_doc(request: SignDocRequest, http: Request,
                   application: Application = Depends(calling_application),
                   context: CscContext = Depends(csc_context)) -> dict:
    """Sign each document (PDF, base64) with the credential at its conformance level, with a
    visible stamp unless ``stamp.visible`` is false; authorised by a SAD for the documents'
    SHA-256 digests, or by ``authData`` (PIN and OTP) for applications allowed one-call signing.
    With ``operationMode`` "A" the answer is a ``responseID`` for signatures/signPolling.
    A malformed request never spends the SAD: every check of what the client sent comes first."""
    check_signature_qualifier(request.signatureQualifier)
    documents = _documents(context, request)  # a malformed request is refused now, not at the poll
    _authorisation(application, request)
    for document in request.documents or ():
        sign_algo_params(document.signAlgoParams)
    if request.operationMode == "A":
        return await start_operation(context, application,
                                     lambda: sign_documents(context, application, request, documents),
                                     keep_seconds(request.validity_period), method=method_label(http.scope))
    if request.validity_period is not None:
        raise InvalidArgument('validity_period applies to operationMode "A" only', field="validity_period")
    return await sign_documents(context, application, request, documents)


def _timestamp_request(request: TimestampRequest) -> tsp.TimeStampReq:
    """The CSC API names the hash's algorithm ``hashAlgo`` here; ``hashAlgorithmOID`` (its name
    in the other methods) is taken too.

    Raises: InvalidArgument: no algorithm or two, an unknown algorithm, a hash of the wrong size,
        a nonce that is not hexadecimal digits.
    """
    named = {oid.strip() for oid in (request.hashAlgo, request.hashAlgorithmOID) if oid is not None}
    if len(named) != 1:
        raise InvalidArgument("hashAlgo, the OID of the hash's algorithm, is needed (once)", field="hashAlgo")
    name = algos.DigestAlgorithmId.map(named.pop())
    if name not in TIMESTAMP_DIGESTS:
        raise InvalidArgument("hashAlgo must be SHA-256, SHA-384 or SHA-512", field="hashAlgo")
    # Decoded whatever its size within the field's length, so that a digest of another size is
    # told the size wanted.
    digest = _base64("hash", request.hash, MAX_TIMESTAMP_HASH_TEXT)
    if len(digest) != TIMESTAMP_DIGESTS[name]:
        raise InvalidArgument(f"hash must be a {name.upper()} digest ({TIMESTAMP_DIGESTS[name]} bytes)", field="hash")
    fields = {"version": "v1", "message_imprint": {"hash_algorithm": {"algorithm": name}, "hashed_message": digest},
              "cert_req": True}
    if request.nonce:
        # Digits only: int() would also take a sign, a 0x prefix, underscores and spaces.
        if not all(c in string.hexdigits for c in request.nonce):
            raise InvalidArgument("nonce must be hexadecimal digits", field="nonce")
        fields["nonce"] = int(request.nonce, 16)
    return tsp.TimeStampReq(fields)


@router.post("/signatures/timestamp", summary="An RFC 3161 time-stamp token for a hash")
async def timestamp(request: TimestampRequest, application: Application = Depends(calling_application),
                    context: CscContext = Depends(csc_context)) -> dict:
    """Answer ``timestamp``: a base64 RFC 3161 TimeStampToken of the server's TSA over ``hash``,
    carrying ``nonce`` when given."""
    query = _timestamp_request(request)
    reply = await context.hsm.run(context.service.pades.tsa.respond_to, query)
    if reply["status"]["status"].native != "granted":
        texts = reply["status"]["status_string"].native or ["refused"]
        raise InvalidArgument(f"the time-stamping authority refused: {'; '.join(texts)}")
    return {"timestamp": base64.b64encode(reply["time_stamp_token"].dump()).decode("ascii")}


@router.post("/signatures/signPolling", summary="The outcome of an asynchronous signHash or signDoc", responses={
    200: {"description": "the answer signHash or signDoc would have given (or its error, with its status)"},
    400: {"description": "not ready (the CSC API's sentence, with Retry-After: poll again), or an unknown "
                         "responseID"}})
async def sign_polling(request: PollRequest, application: Application = Depends(calling_application),
                       context: CscContext = Depends(csc_context)) -> Response:
    """Answer the outcome of an operation this application started with ``operationMode`` "A":
    the synchronous answer once done (or its error); while it runs, the CSC API's "not yet
    completed" error (400 invalid_request, see operations.py) with a Retry-After. The operation
    is named ``requestID`` (the CSC API's name here) or ``responseID`` (signserver's first)."""
    response_id = request.operation()
    outcome = await poll_operation(context, application, response_id)
    if outcome.running:
        return not_ready(response_id)
    return Response(outcome.answer, status_code=outcome.status_code, media_type="application/json")

