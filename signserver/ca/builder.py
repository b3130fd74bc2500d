"""Building X.509 certificates, CRLs' and CSRs' checks from profiles: the parts with no state."""

from __future__ import annotations

import datetime
import ipaddress
import re
import unicodedata
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from signserver.ca.profiles import Profile
from signserver.config import CaConfig
from signserver.errors import InvalidArgument

ROLE = ObjectIdentifier("2.5.4.72")  # X.520 id-at-role: the agent's qualification
QC_STATEMENTS = ObjectIdentifier("1.3.6.1.5.5.7.1.3")
QC_COMPLIANCE = "0.4.0.1862.1.1"
QC_LIMIT_VALUE = "0.4.0.1862.1.2"
QC_SSCD = "0.4.0.1862.1.4"
QC_TYPE = "0.4.0.1862.1.6"
QC_TYPE_ESIGN = "0.4.0.1862.1.6.1"  # certificates for electronic signatures
QC_LEGISLATION = "0.4.0.1862.1.7"
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


# RFC 5280 Appendix A's upper bounds (ub-common-name, ub-organization-name, ub-title, ...): a longer
# value makes a certificate that decoders refuse. The role has none there; it gets the same 64.
_UPPER_BOUND = 64
_UPPER_BOUND_NAME = 32768  # ub-name: givenName, surname
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")  # X.680 PrintableString
SMTP_UTF8_MAILBOX = ObjectIdentifier("1.3.6.1.5.5.7.8.9")  # RFC 9598 id-on-SmtpUTF8Mailbox


@dataclass(frozen=True)
class SubjectData:
    """Who a certificate names, as the documents list it."""

    common_name: str
    email: str = ""
    organisation: str = ""
    department: str = ""
    title: str = ""
    serial_number: str = ""
    country: str = ""
    agent_qualification: str = ""  # qualified certificates
    # A natural person's names (ETSI EN 319 412-2 NAT-4.2.4-1: givenName and surname, or pseudonym).
    given_name: str = ""
    surname: str = ""

    def name(self) -> x509.Name:
        """The subject's distinguished name.

        Raises: InvalidArgument: a value longer than its X.509 upper bound or with control
            characters (naming the value), an account name a serialNumber (PrintableString) cannot
            hold, an e-mail address whose domain is not a valid internationalised domain name.
        """
        self.check()
        email = ascii_mailbox(self.email)  # IA5String: left out when the local part is not ASCII
        attributes = [(NameOID.COUNTRY_NAME, self.country), (NameOID.ORGANIZATION_NAME, self.organisation),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, self.department), (NameOID.TITLE, self.title),
                      (ROLE, self.agent_qualification), (NameOID.GIVEN_NAME, self.given_name),
                      (NameOID.SURNAME, self.surname), (NameOID.COMMON_NAME, self.common_name),
                      (NameOID.SERIAL_NUMBER, self.serial_number), (NameOID.EMAIL_ADDRESS, email)]
        try:
            return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes if value])
        except ValueError as exc:
            raise InvalidArgument(f"the subject is not valid: {exc}") from None

    def check(self) -> None:
        """Raises: InvalidArgument: as :meth:`name`."""
        for label, value, bound in (("the holder's name", self.common_name, _UPPER_BOUND),
                                    ("the organisation", self.organisation, _UPPER_BOUND),
                                    ("the department", self.department, _UPPER_BOUND),
                                    ("the title", self.title, _UPPER_BOUND),
                                    ("the agent qualification", self.agent_qualification, _UPPER_BOUND),
                                    ("the given name", self.given_name, _UPPER_BOUND_NAME),
                                    ("the surname", self.surname, _UPPER_BOUND_NAME)):
            if len(value) > bound:
                raise InvalidArgument(f"{label} has at most {bound} characters in a certificate; it has {len(value)}")
            if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
                raise InvalidArgument(f"{label} must not contain control characters")
        if self.serial_number and (len(self.serial_number) > _UPPER_BOUND
                                   or not _PRINTABLE.fullmatch(self.serial_number)):
            raise InvalidArgument(
                f"the account name {self.serial_number!r} cannot be a certificate's serialNumber, a PrintableString "
                "of letters, digits, spaces and '()+,-./:=?")


def _split_mailbox(address: str) -> tuple[str, str]:
    """The local part and the domain in A-labels (IDNA).

    Raises: InvalidArgument: the domain is not a valid internationalised domain name.
    """
    local, _, domain = address.rpartition("@")
    try:
        return local, domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidArgument(f"the e-mail address {address!r} has a domain that is not a valid domain name") from None


def ascii_mailbox(address: str) -> str:
    """The address as an rfc822Name and the subject's emailAddress hold it (IA5String, the domain
    in A-labels), or "" when its local part is not ASCII (only an SmtpUTF8Mailbox can name it).

    Raises: InvalidArgument: as :func:`_split_mailbox`.
    """
    if not address:
        return ""
    local, domain = _split_mailbox(address)
    return f"{local}@{domain}" if local.isascii() else ""


def mailbox_name(address: str) -> x509.GeneralName:
    """The subjectAltName entry for an e-mail address: an rfc822Name, or, for a local part that is
    not ASCII, RFC 9598's SmtpUTF8Mailbox (a UTF8String; the domain in lower-case A-labels, as
    section 3 asks).

    Raises: InvalidArgument: as :func:`_split_mailbox`.
    """
    ascii_form = ascii_mailbox(address)
    if ascii_form:
        return x509.RFC822Name(ascii_form)
    local, domain = _split_mailbox(address)
    mailbox = f"{unicodedata.normalize('NFC', local)}@{domain.lower()}"
    return x509.OtherName(SMTP_UTF8_MAILBOX, core.UTF8String(mailbox).dump())


class _MonetaryValue(core.Sequence):
    _fields = [("currency", core.PrintableString), ("amount", core.Integer), ("exponent", core.Integer)]


class _QcStatement(core.Sequence):
    _fields = [("statement_id", core.ObjectIdentifier), ("statement_info", core.Any, {"optional": True})]


class _QcStatements(core.SequenceOf):
    _child_spec = _QcStatement


class _QcTypes(core.SequenceOf):
    _child_spec = core.ObjectIdentifier


class _CountryCodes(core.SequenceOf):
    _child_spec = core.PrintableString


def qc_statements(transaction_limit: int | None, country: str, currency: str = "MOP") -> x509.UnrecognizedExtension:
    """ETSI EN 319 412-5 statements: compliance, the certificate's type (for electronic
    signatures), key in a secure device, the legislation the certificate is qualified under (the
    CA's country: this CA is not an EU trust service, so its certificates must not read as EU
    qualified ones), and the transaction limit."""
    statements = [_QcStatement({"statement_id": QC_COMPLIANCE}),
                  _QcStatement({"statement_id": QC_TYPE, "statement_info": _QcTypes([QC_TYPE_ESIGN])}),
                  _QcStatement({"statement_id": QC_SSCD})]
    if country:
        statements.append(_QcStatement({"statement_id": QC_LEGISLATION,
                                        "statement_info": _CountryCodes([country])}))
    if transaction_limit is not None:
        limit = _MonetaryValue({"currency": currency, "amount": transaction_limit, "exponent": 0})
        statements.append(_QcStatement({"statement_id": QC_LIMIT_VALUE, "statement_info": limit}))
    return x509.UnrecognizedExtension(QC_STATEMENTS, _QcStatements(statements).dump())


def transaction_limit_of(certificate: x509.Certificate) -> int | None:
    """The QcLimitValue amount of a certificate, if it has one."""
    try:
        extension = certificate.extensions.get_extension_for_oid(QC_STATEMENTS)
    except x509.ExtensionNotFound:
        return None
    for statement in _QcStatements.load(extension.value.value):
        if statement["statement_id"].dotted == QC_LIMIT_VALUE:
            return _MonetaryValue.load(statement["statement_info"].dump())["amount"].native
    return None


def check_public_key(key) -> None:
    """Raises: InvalidArgument: a weak or unsupported key."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidArgument(f"an RSA key of {key.key_size} bits is too weak; at least {MIN_RSA_BITS}")
        if key.public_numbers().e < 65537:
            raise InvalidArgument("the RSA public exponent is too small")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise InvalidArgument(f"the curve {key.curve.name} is not accepted; use P-256, P-384 or P-521")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidArgument("the key type is not accepted; use RSA, EC P-256/P-384/P-521 or Ed25519")


def check_key_for_profile(profile: Profile, key) -> None:
    """Raises: InvalidArgument (``field`` "csr"): an encryption profile's key that cannot encipher
    nor agree on keys (Ed25519 signs only: RFC 8410 forbids it keyEncipherment)."""
    if "encipherment" in profile.key_usage and isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidArgument(f"profile {profile.name!r} certifies a key for encryption; an Ed25519 key only "
                              "signs: use RSA or EC P-256/P-384/P-521", field="csr")


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER request and check its signature and key.

    Raises: InvalidArgument (``field`` "csr"): not a request, a key of an algorithm or curve
        cryptography does not know or a key that is not valid, a bad signature, or a weak key.
    """
    try:
        request = (x509.load_pem_x509_csr(data) if data.lstrip().startswith(b"-----BEGIN")
                   else x509.load_der_x509_csr(data))
    except ValueError:
        raise InvalidArgument("the certificate request is not a PKCS#10 request (PEM or DER)", field="csr") from None
    # The key is loaded only here (by both calls), so an unknown algorithm or a point off its
    # curve surfaces here, as cryptography's own errors: the caller's fault, not the server's.
    try:
        key = request.public_key()
        valid = request.is_signature_valid
    except CryptographyUnsupportedAlgorithm:
        raise InvalidArgument("the certificate request's key algorithm is not accepted; use RSA, EC "
                              "P-256/P-384/P-521 or Ed25519", field="csr") from None
    except ValueError:
        raise InvalidArgument("the certificate request's public key is not valid", field="csr") from None
    if not valid:
        raise InvalidArgument("the certificate request's signature does not verify", field="csr")
    try:
        check_public_key(key)
    except InvalidArgument as exc:
        exc.field = "csr"  # kept its class: a weak key and an unsupported algorithm keep their reasons
        raise
    return request


def signature_hash(key) -> hashes.HashAlgorithm | None:
    """The digest a CA key signs with: SHA-384 for P-384, none for Ed25519, SHA-256 otherwise."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def end_entity_certificate(*, profile: Profile, subject: x509.Name, public_key, issuer: x509.Certificate,
                           issuer_key, serial: int, not_before: datetime.datetime, days: int, ca: CaConfig,
                           email: str = "", dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
                           transaction_limit: int | None = None) -> x509.Certificate:
    """Build and sign (in the HSM, through ``issuer_key``) a certificate of ``profile``, valid
    ``days`` from ``not_before`` or until its issuer's end if that comes first (a certificate its
    issuer does not outlive).

    Raises: InvalidArgument: a key the profile cannot use (see :func:`check_key_for_profile`),
        an e-mail address whose domain is not a domain name.
    """
    check_key_for_profile(profile, public_key)
    usage = set(profile.key_usage)
    if "encipherment" in usage:
        usage.discard("encipherment")
        usage.add("key_agreement" if isinstance(public_key, ec.EllipticCurvePublicKey) else "key_encipherment")
    flags = {name: name in usage for name in ("digital_signature", "content_commitment", "key_encipherment",
                                              "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")}
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer.subject).public_key(public_key).serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(min(not_before + datetime.timedelta(days=days), issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**flags, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(profile.policy,
                                                                        [profile.cps_uri or ca.cps_uri])]),
                       critical=False)
        .add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ca.url("ocsp"))),
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(ca.url("ca/issuing.crt")))]), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(ca.url("crl/issuing.crl"))], None, None, None)]), critical=False)
    )
    if profile.extended_key_usage:
        # RFC 3161 wants the time-stamping usage alone and critical.
        critical = profile.extended_key_usage == (x509.oid.ExtendedKeyUsageOID.TIME_STAMPING,)
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(profile.extended_key_usage)), critical=critical)
    alternative = [mailbox_name(email)] if email else []
    alternative += [x509.DNSName(n) for n in dns_names]
    alternative += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if alternative:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    if profile.qualified:
        builder = builder.add_extension(qc_statements(transaction_limit, ca.country), critical=False)
    if profile.name == "ocsp-responder":
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(issuer_key, signature_hash(issuer_key))


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The issuer's own subject key identifier (RFC 5280 4.2.1.1: the AKI is the issuer's SKI), which
    an external root may have computed otherwise than from the key's SHA-1; computed so only for
    an issuer without one."""
    try:
        identifier = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier)


def ca_certificate(*, subject: x509.Name, public_key, issuer_name: x509.Name, issuer_key, issuer_public_key,
                   serial: int, not_before: datetime.datetime, days: int, path_length: int | None,
                   crl_url: str | None, ca: CaConfig, ca_issuers_url: str | None = None,
                   until: datetime.datetime | None = None) -> x509.Certificate:
    """A root (self-signed) or issuing CA certificate, valid ``days`` from ``not_before`` or until
    ``until`` if that comes first (its issuer's end). ``ca_issuers_url``, for an issuing CA: where
    its issuer's certificate is published (authority information access, caIssuers only: the
    OCSP responder answers for the issuing CA's certificates, not for the CA itself, whose status
    is on its issuer's CRL at ``crl_url``). A self-signed root gets neither."""
    not_after = not_before + datetime.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer_name).public_key(public_key).serial_number(serial)
        .not_valid_before(not_before).not_valid_after(min(not_after, until) if until is not None else not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False)
    )
    if crl_url:
        builder = (builder
                   .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                       [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
                   .add_extension(x509.CertificatePolicies([x509.PolicyInformation(
                       ObjectIdentifier("2.5.29.32.0"), [ca.cps_uri])]), critical=False))
    if ca_issuers_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers_url))]),
            critical=False)
    return builder.sign(issuer_key, signature_hash(issuer_key))
