"""credentials/list, credentials/info, credentials/authorize and credentials/extendTransaction
(CSC API v2). The v1 shapes of the same methods (v1.py) are built from the functions here.

Every rule of the gRPC path holds because the same facade methods run: the application's
policy, lockout, OTP single use, the activation token's binding, the audit log.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from signserver.accounts.model import Application, Credential
from signserver.errors import InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm
from signserver.http.csc import algorithms
from signserver.http.csc.auth import calling_application
from signserver.http.csc.context import CscContext, csc_context
from signserver.http.csc.errors import credential_lookup
from signserver.secret import Secret
from signserver.service import CredentialDetails, SignService
from signserver.signing.hash_signer import Authorization

router = APIRouter(tags=["credentials"])

MAX_ID = 64
MAX_OTP = 16
# The CSC API's identifier of the signatures this service makes: advanced electronic signatures
# (the legal effect its holders' certificates give), never qualified ones (no qualified
# certificate, no QSCD) nor seals (its credentials are natural persons').
SIGNATURE_QUALIFIER = "eu_eidas_aes"
EXTEND_REFUSED = ("a SAD cannot be extended: it is bound to the hashes the holder's factors authorised; "
                  "call credentials/authorize again with the PIN and OTP")


class CscRequest(BaseModel):
    """Fields CSC defines that signserver does not use (lang, clientData, ...) are accepted.
    Values are taken as the JSON types CSC gives them, never converted: true or "1" is no
    numSignatures, "yes" no certInfo (CSC: "Missing (or invalid type) ... parameter")."""

    model_config = ConfigDict(extra="allow", strict=True)


class ListRequest(CscRequest):
    userID: str | None = Field(default=None, max_length=MAX_ID)
    credentialInfo: bool = False
    certificates: str = "single"
    certInfo: bool = False
    authInfo: bool = False
    onlyValid: bool = False
    lang: str | None = None
    clientData: str | None = None


class InfoRequest(CscRequest):
    credentialID: str = Field(min_length=1, max_length=MAX_ID)
    certificates: str = "single"
    certInfo: bool = False
    authInfo: bool = False
    lang: str | None = None
    clientData: str | None = None


class AuthData(BaseModel):
    id: str = Field(max_length=32)
    value: str = Field(max_length=1024)


class AuthorizeRequest(CscRequest):
    credentialID: str = Field(min_length=1, max_length=MAX_ID)
    numSignatures: int = Field(ge=1)
    signatureQualifier: str | None = Field(default=None, max_length=64)
    hashes: list[str] | None = None
    hashAlgorithmOID: str | None = Field(default=None, max_length=64)
    authData: list[AuthData] | None = Field(default=None, max_length=4)
    description: str | None = Field(default=None, max_length=500)
    clientData: str | None = None


class ExtendRequest(CscRequest):
    credentialID: str = Field(min_length=1, max_length=MAX_ID)
    SAD: str = Field(min_length=1, max_length=512)
    hashes: list[str] | None = None
    hashAlgorithmOID: str | None = None
    clientData: str | None = None


def check_signature_qualifier(qualifier: str | None) -> None:
    """A signatureQualifier the service meets: none, or SIGNATURE_QUALIFIER. A signature of another
    type must not be made as an advanced one in the caller's name: it is refused instead.

    Raises: InvalidArgument (field signatureQualifier): any other.
    """
    if qualifier is not None and qualifier != SIGNATURE_QUALIFIER:
        raise InvalidArgument(f"Invalid parameter signatureQualifier: this service creates advanced electronic "
                              f"signatures ({SIGNATURE_QUALIFIER}) only, not {qualifier[:64]!r}",
                              field="signatureQualifier")


def decode_hashes(values: list[str] | None, field: str, maximum: int) -> list[bytes]:
    """Base64 digests.

    Raises: InvalidArgument: none, too many, or not base64.
    """
    if not values:
        raise InvalidArgument(f"{field} is needed: SCAL 2 binds a SAD to the hashes it signs")
    if len(values) > maximum:
        raise InvalidArgument(f"at most {maximum} hashes per request, not {len(values)}")
    decoded = []
    for index, value in enumerate(values):
        try:
            decoded.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{field}[{index}] is not base64") from None
    return decoded


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def certificates_wanted(value: str) -> str:
    """Raises: InvalidArgument."""
    if value not in ("none", "single", "chain"):
        raise InvalidArgument("certificates is 'none', 'single' or 'chain'")
    return value


def _time(moment: datetime.datetime) -> str:
    """CSC's GeneralizedTime string (YYYYMMDDHHMMSSZ)."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")


@dataclass(frozen=True)
class CertificateState:
    status: str  # valid | expired | revoked, as the CA records it
    certificate: x509.Certificate | None


def credential_details(service: SignService, application: Application, credential_id: str) -> tuple[
        CredentialDetails, str | None]:
    """The credential's details and its certificate's status (None before its first).

    Raises: NotFound (UNKNOWN_CREDENTIAL: no such credential, another holder's, or its key
        missing, alike), InvalidArgument, HsmError.
    """
    with credential_lookup():
        details = service.credential_details(application, credential_id)
        status = None
        if details.certificates:
            status = service.ca.get(format(details.certificates[0].serial_number, "x")).status
    return details, status


def key_body(details: CredentialDetails) -> dict:
    credential = details.info.credential
    public_key = load_der_public_key(details.info.public_key_der)
    body = {"status": "enabled" if credential.status == "active" else "disabled",
            "algo": algorithms.KEY_ALGORITHM_OIDS[credential.key_algorithm.family],
            "len": public_key.key_size if isinstance(public_key, rsa.RSAPublicKey) else credential.key_algorithm.size}
    if credential.key_algorithm in algorithms.CURVE_OIDS:
        body["curve"] = algorithms.CURVE_OIDS[credential.key_algorithm]
    return body


def certificate_body(details: CredentialDetails, status: str | None, wanted: str, cert_info: bool) -> dict | None:
    """The ``cert`` object: status (the CSC API's "valid", "expired" or "revoked", as the CA
    records it now), the certificates (base64 DER, the holder's first) and, when asked, the
    holder's certificate's issuer, serial, subject and validity. None for a credential that has
    no certificate yet: the answer then has no ``cert`` at all, rather than a status of nothing."""
    chain = details.certificates
    if not chain or status is None:
        return None
    body: dict = {"status": status}
    if wanted != "none":
        body["certificates"] = [b64(c.public_bytes(Encoding.DER)) for c in (chain if wanted == "chain" else chain[:1])]
    if cert_info and chain:
        holder = chain[0]
        body.update(issuerDN=holder.issuer.rfc4514_string(), serialNumber=format(holder.serial_number, "x"),
                    subjectDN=holder.subject.rfc4514_string(), validFrom=_time(holder.not_valid_before_utc),
                    validTo=_time(holder.not_valid_after_utc))
    return body


def auth_body(application: Application) -> dict:
    """authMode explicit: the holder's password as the PIN, and the OTP (when the application's
    policy asks for it)."""
    objects = [{"type": "Password", "id": "PIN", "format": "A", "label": "Password",
                "description": "The signing password of the credential's holder"}]
    if application.otp_required:
        objects.append({"type": "Password", "id": "OTP", "format": "N", "generator": "totp", "label": "OTP",
                        "description": "The one-time password of the holder's OTP app (each code is accepted once)"})
    return {"mode": "explicit", "expression": "PIN AND OTP" if application.otp_required else "PIN",
            "objects": objects}


def info_body(service: SignService, application: Application, details: CredentialDetails, status: str | None,
              wanted: str, cert_info: bool, auth_info: bool) -> dict:
    credential = details.info.credential
    body = {"description": credential.description or f"signing credential of {credential.username}",
            "signatureQualifier": SIGNATURE_QUALIFIER, "key": key_body(details), "SCAL": "2", "multisign": service.signer.max_signatures, "lang": "en-US"}
    cert = certificate_body(details, status, wanted, cert_info)
    if cert is not None:
        body["cert"] = cert
    if auth_info:
        body["auth"] = auth_body(application)
    return body


@router.post("/credentials/list", summary="The credentials of a user")
async def list_credentials(body: ListRequest, application: Application = Depends(calling_application),
                           context: CscContext = Depends(csc_context)) -> dict:
    """userID is the account's name. Shown only to an application whose policy names the
    account (as gRPC's ListCredentials without an activation token).

    Raises: InvalidArgument, PermissionDenied.
    """
    if not body.userID:
        raise InvalidArgument("userID is needed: the service scope serves many users")
    wanted = certificates_wanted(body.certificates)
    service = context.service
    found: list[Credential] = await context.accounts.run(service.credentials.credentials_shown_to, application,
                                                         body.userID)
    ids, infos = [], []
    for credential in found:
        if body.onlyValid and credential.status != "active":
            continue
        if body.credentialInfo or body.onlyValid:
            details, status = await context.hsm.run(credential_details, service, application, credential.id)
            if body.onlyValid and status != "valid":
                continue  # expired, revoked, or no certificate yet: no valid signature comes of it
            if body.credentialInfo:
                infos.append({"credentialID": credential.id,
                              **info_body(service, application, details, status, wanted, body.certInfo,
                                          body.authInfo)})
        ids.append(credential.id)
    answer: dict = {"credentialIDs": ids, "onlyValid": body.onlyValid}
    if body.credentialInfo:
        answer["credentialInfos"] = infos
    return answer


@router.post("/credentials/info", summary="A credential's key, certificates and authorisation")
async def credential_info(body: InfoRequest, application: Application = Depends(calling_application),
                          context: CscContext = Depends(csc_context)) -> dict:
    """Raises: NotFound (400 "Invalid parameter credentialID", also for a credential of an
    account the application may not serve), InvalidArgument."""
    wanted = certificates_wanted(body.certificates)
    details, status = await context.hsm.run(credential_details, context.service, application, body.credentialID)
    return info_body(context.service, application, details, status, wanted, body.certInfo, body.authInfo)


@dataclass(frozen=True)
class Factors:
    password: Secret
    otp: str | None


def factors_of(auth_data: list[AuthData] | None) -> Factors:
    """The PIN (the holder's password) and OTP of authData.

    Raises: InvalidArgument: no PIN, an unknown or repeated id, an OTP that is too long.
    """
    values: dict[str, str] = {}
    for item in auth_data or ():
        if item.id not in ("PIN", "OTP") or item.id in values:
            raise InvalidArgument("authData holds one PIN and at most one OTP")
        values[item.id] = item.value
    return checked_factors(values.get("PIN"), values.get("OTP"))


def checked_factors(pin: str | None, otp_code: str | None) -> Factors:
    """Raises: InvalidArgument."""
    if not pin:
        raise InvalidArgument("the PIN (the holder's password) is needed: authMode is explicit")
    if otp_code is not None and len(otp_code) > MAX_OTP:
        raise InvalidArgument(f"an OTP has at most {MAX_OTP} characters")
    return Factors(Secret(pin), otp_code or None)


async def authorize(context: CscContext, application: Application, credential_id: str, num_signatures: int,
                    digests: list[bytes], hash_algorithm: HashAlgorithm, factors: Factors) -> Authorization:
    """Issue a SAD for these digests (SCAL 2: numSignatures equals their number).

    Raises: InvalidArgument, AuthenticationFailed, AccountLocked, AccountDisabled,
        AuthenticationBusy, CredentialUnusable (see SignService.authorize_credential).
    """
    if num_signatures != len(digests):
        raise InvalidArgument(f"numSignatures is {num_signatures} but {len(digests)} hashes are given: "
                              "a SAD authorises exactly the hashes it names")
    return await context.accounts.run(context.service.authorize_credential, application, credential_id,
                                      factors.password, factors.otp, hash_algorithm, digests)


def expires_in(context: CscContext, issued: Authorization) -> int:
    return max(1, int((issued.expires_at - context.service.clock.now()).total_seconds()))


@router.post("/credentials/authorize", summary="Authorise signatures of these hashes: a SAD")
async def authorize_credential(body: AuthorizeRequest, application: Application = Depends(calling_application),
                               context: CscContext = Depends(csc_context)) -> dict:
    """authData: PIN (the holder's password) and OTP. An unknown credential, one of an account
    the application may not serve, and a wrong factor are refused alike.

    Raises: as :func:`authorize`; InvalidArgument: a signatureQualifier the service does not meet.
    """
    check_signature_qualifier(body.signatureQualifier)
    maximum = context.service.signer.max_signatures
    digests = decode_hashes(body.hashes, "hashes", maximum)
    hash_algorithm = (algorithms.hash_algorithm(body.hashAlgorithmOID) if body.hashAlgorithmOID
                      else algorithms.hash_of_length(digests))
    issued = await authorize(context, application, body.credentialID, body.numSignatures, digests, hash_algorithm,
                             factors_of(body.authData))
    return {"SAD": issued.token, "expiresIn": expires_in(context, issued)}


@router.post("/credentials/extendTransaction", summary="Not offered: authorise again instead")
async def extend_transaction(body: ExtendRequest, application: Application = Depends(calling_application)) -> dict:
    """A SAD here is bound to the hashes the holder authorised and lives a few minutes; a longer
    or wider one would need the holder's factors again, so this refuses as the CSC API allows
    (400 invalid_request) and the client calls credentials/authorize.

    Raises: InvalidArgument, always.
    """
    raise InvalidArgument(EXTEND_REFUSED)
