"""SignService: the one plain-Python facade that every adapter (gRPC, CLI) calls.

It speaks dataclasses and the signserver error hierarchy; nothing here knows about gRPC.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cryptography import x509

from signserver import __version__
from signserver.accounts.access_tokens import AccessTokens
from signserver.accounts.applications import ApplicationRegistry
from signserver.accounts.authentication import Authenticator
from signserver.accounts.lockout import LockoutPolicy
from signserver.accounts.manager import AccountManager
from signserver.accounts.master_rotation import MasterRotation
from signserver.accounts.model import Application
from signserver.accounts.packages import SigningPackages
from signserver.accounts.passwords import SecretHasher
from signserver.audit.log import AuditLog
from signserver.audit.seal import SEAL_KEY_SETTING, AuditSealer, pin_path, seal_key_algorithm
from signserver.audit.seal_key import SealKeyPin
from signserver.ca.authority import CertificateAuthority
from signserver.ca.service_keys import SERVICE_KEY_SETTINGS, service_key_algorithm
from signserver.clock import Clock, SystemClock
from signserver.config import Config
from signserver.accounts.repository import get_credential
from signserver.errors import InvalidArgument, NotFound, SignServerError
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.certificate_requests import build_certificate_request
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.keystore import HsmKeyStore, KeyInfo
from signserver.hsm.master_keys import MasterKeys
from signserver.hsm.packages import PackageKeys
from signserver.hsm.module import use_softhsm_config
from signserver.hsm.pin_guard import PinGuard
from signserver.hsm.sealing import SealingKey
from signserver.hsm.session import TokenSession
from signserver.notify.sender import OutboxSender
from signserver.secret import Secret
from signserver.signing.credential_directory import CredentialDirectory, CredentialInfo
from signserver.signing.hash_signer import Authorization, HashSigner
from signserver.store.database import Database

if TYPE_CHECKING:
    from signserver.pades.document import PadesLevel
    from signserver.pades.service import PadesService
    from signserver.pades.stamp import StampOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """What a client may ask about the server."""

    version: str
    token_label: str
    token_model: str
    token_manufacturer: str
    key_algorithms: tuple[KeyAlgorithm, ...]
    signature_algorithms: tuple[SignatureAlgorithm, ...]


@dataclass(frozen=True)
class CredentialDetails:
    """A credential as an application building its own CMS needs it: the key, the algorithms
    and the certificates to put in the signature."""

    info: CredentialInfo
    certificates: tuple[x509.Certificate, ...]  # the newest certificate, then its issuers to the root; () before the first


@dataclass(frozen=True)
class Health:
    """Whether the HSM answers, and why not when it does not."""

    serving: bool
    detail: str


class SignService:
    """Facade over the domain: keys in the HSM, accounts, applications, signing, audit, e-mail."""

    def __init__(self, config: Config, keys: HsmKeyStore, clock: Clock | None = None):
        self.config = config
        self.keys = keys
        self.clock = clock or SystemClock()
        self.database = Database(config.database_url, config.database)
        self.audit = AuditLog()
        self.sealing = sealing = SealingKey(keys.session)
        hasher = SecretHasher(config.accounts)
        lockout = LockoutPolicy(config.accounts)
        self.master_keys = MasterKeys(keys.session)
        self.package_keys = PackageKeys(keys.session, self.master_keys)
        self.packages = SigningPackages(self.database, self.package_keys, self.master_keys, self.clock)
        self.master_rotation = MasterRotation(self.database, self.packages, self.master_keys, self.audit, self.clock)
        authenticator = Authenticator(self.database, hasher, lockout, sealing, self.audit, self.clock)
        self.lock_notices = authenticator.lock_notices
        self.accounts = AccountManager(self.database, self.packages, sealing, hasher, lockout, authenticator,
                                       self.audit, self.clock)
        self.applications = ApplicationRegistry(self.database, self.clock)
        self.access_tokens = AccessTokens(self.database, self.clock,
                                          datetime.timedelta(seconds=config.csc.access_token_seconds))
        self.credentials = CredentialDirectory(self.database, keys, self.packages, self.applications, self.clock)
        self.signer = HashSigner(self.database, keys, self.packages, self.package_keys, self.applications,
                                 self.credentials, authenticator, self.audit, self.clock,
                                 datetime.timedelta(seconds=config.authorization.token_lifetime_seconds),
                                 config.authorization.max_signatures)
        self.sealer = AuditSealer(self.database, keys, self.audit, self.clock, config.audit.seal_every_records,
                                  config.audit.seal_interval_seconds, SealKeyPin(pin_path(config.state_dir)),
                                  key_algorithm=config.audit.seal_key_algorithm)
        self.outbox = OutboxSender(self.database, config.smtp, self.clock)
        self.ca = CertificateAuthority(self.database, keys, self.accounts, self.audit, self.clock, config.ca)

    @functools.cached_property  # made once, under the lock cached_property takes on Python 3.11
    def pades(self) -> PadesService:
        """PAdES signing, verification and the TSA, made on first use: pyHanko and fontTools take most
        of a second to import, which the commands that never touch a document should not pay."""
        from signserver.pades.service import PadesService  # imported here: only documents need pyHanko

        return PadesService(self.database, self.keys, self.ca, self.signer, self.credentials, self.audit,
                            self.clock, self.config.state_dir, self.config.pades)

    @classmethod
    def from_config(cls, config: Config, user_pin: Secret | None = None, module: Path | None = None,
                    token_label: str | None = None, clock: Clock | None = None) -> "SignService":
        """Build the service for the configured token and database; nothing is opened until used.

        ``module`` and ``token_label`` override the configuration (the CLI's ``--module`` and
        ``--token``); ``user_pin`` overrides ``SIGNSERVER_HSM_USER_PIN`` and the PIN file.

        Raises: ConfigurationError: no PIN is available.
        """
        use_softhsm_config(config.hsm.softhsm2_conf)
        session = TokenSession(
            module or config.hsm.module,
            token_label or config.hsm.token_label,
            user_pin if user_pin is not None else config.hsm.user_pin(),
            PinGuard.for_config(config.hsm, config.state_dir),  # no process may lock the token's PIN
        )
        return cls(config, HsmKeyStore(session), clock)

    def prepare_database(self) -> None:
        """Create or upgrade the database schema. Raises: ConfigurationError."""
        self.database.migrate()

    def check_key_settings(self) -> dict[str, KeyAlgorithm]:
        """The algorithms the OCSP responder's, the TSA's and the audit seal's new keys get on this
        token, by setting name: checked at start, so that a setting the token cannot follow stops
        the server before anything is made.

        Raises: ConfigurationError (naming the setting), HsmError.
        """
        capabilities = self.keys.session.capabilities()
        return {SERVICE_KEY_SETTINGS[role]: service_key_algorithm(role, self.config.ca, capabilities)
                for role in SERVICE_KEY_SETTINGS} | {
            SEAL_KEY_SETTING: seal_key_algorithm(self.keys, self.config.audit.seal_key_algorithm)}

    def close(self) -> None:
        """Release the HSM session and the database connections."""
        self.keys.close()
        self.database.dispose()

    # --- server -----------------------------------------------------------------------

    def server_info(self) -> ServerInfo:
        """Raises: HsmError, TokenNotFound."""
        token = self.keys.describe_token()
        key_algorithms = tuple(a for a in KeyAlgorithm if a.generation_mechanism in token.mechanisms)
        families = {a.family for a in key_algorithms}
        return ServerInfo(
            version=__version__,
            token_label=token.label,
            token_model=token.model,
            token_manufacturer=token.manufacturer,
            key_algorithms=key_algorithms,
            signature_algorithms=tuple(s for s in SignatureAlgorithm if s.family in families),
        )

    def health(self) -> Health:
        """Probe the HSM through the logged-in session. Never raises for an HSM fault."""
        try:
            self.keys.ping()
        except SignServerError as exc:
            return Health(serving=False, detail=str(exc))
        return Health(serving=True, detail="the HSM answers")

    # --- keys -------------------------------------------------------------------------

    def generate_key(self, algorithm: KeyAlgorithm, label: str) -> KeyInfo:
        """Raises: InvalidArgument, AlreadyExists, UnsupportedAlgorithm, HsmError."""
        return self.keys.generate(algorithm, label)

    def list_keys(self) -> list[KeyInfo]:
        """Raises: HsmError."""
        return self.keys.list()

    def find_key(self, reference: str) -> KeyInfo:
        """A key by label, else by id. Raises: KeyNotFound, HsmError."""
        return self.keys.resolve(reference)

    def delete_key(self, reference: str) -> KeyInfo:
        """Raises: KeyNotFound, HsmError."""
        key = self.keys.resolve(reference)
        self.keys.delete(key.key_id)
        return key

    def delete_unnamed_keys(self) -> int:
        """Destroy the key objects a generation left half-made (HsmKeyStore.delete_unnamed); returns
        how many. Raises: HsmError."""
        return self.keys.delete_unnamed()

    def certificate_request(self, reference: str, subject: x509.Name,
                            signature_algorithm: SignatureAlgorithm | None = None) -> x509.CertificateSigningRequest:
        """A PKCS#10 request for the key, signed inside the HSM.

        Raises: KeyNotFound, UnsupportedAlgorithm, HsmError.
        """
        key = self.keys.resolve(reference)
        private_key = hsm_private_key(self.keys, key.key_id)
        return build_certificate_request(private_key, key.algorithm, subject, signature_algorithm)

    def import_certificate(self, reference: str, certificate: x509.Certificate) -> KeyInfo:
        """Store the certificate beside its key. Raises: InvalidArgument, KeyNotFound, HsmError."""
        key = self.keys.resolve(reference)
        self.keys.store_certificate(key.key_id, certificate)
        return key

    def credential_details(self, application: Application, credential_id: str) -> CredentialDetails:
        """The credential's key, algorithms and certificate chain, for an application that may
        use it (see CredentialDirectory.credential_info).

        Raises: NotFound (also for a credential of an account the application may not serve),
            InvalidArgument, KeyNotFound, HsmError.
        """
        info = self.credentials.credential_info(application, credential_id)
        certificate = self.ca.signing_certificate(info.credential.id)
        chain = tuple(self.ca.chain()) if certificate is not None else ()
        return CredentialDetails(info, (certificate, *chain) if certificate is not None else ())

    def sign_pdfs_with_activation(self, application: Application, credential_id: str, token: Secret,
                                  documents: list[tuple[BinaryIO, BinaryIO, PadesLevel, StampOptions]]) -> list[bytes]:
        """Sign whole documents (source, destination, level, stamp) with an activation token the
        holder had issued (Authorize) for the SHA-256 of each: each is prepared (a document or
        option that signing refuses is refused, and nothing is spent), then the token is spent on
        all their digests at once (one it does not cover refuses them all, and none is spent), then
        each is signed. Returns the SHA-256 of each signed document.

        Raises: ActivationRefused (a token reused, expired, for another credential or another
            document), NotFound, CredentialUnusable, InvalidArgument (not a PDF one can sign),
            HsmError.
        """
        digests = []
        for source, _, _, _ in documents:
            source.seek(0)
            digest = hashlib.sha256()
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
            digests.append(digest.digest())
        # Every document prepared first: a document or option signing would refuse is refused
        # with the token whole, not after it was spent on all of them.
        ready = []
        for index, (source, destination, level, stamp) in enumerate(documents):
            try:
                ready.append(self.pades.prepare_signing(application, credential_id, source, destination, level,
                                                        stamp))
            except InvalidArgument as refused:
                if len(documents) == 1:
                    raise
                raise InvalidArgument(f"documents[{index}]: {refused}", field="documents") from None
        spent = self.signer.spend(application, credential_id, token, HashAlgorithm.SHA256, digests)
        # The same signing as the one-call flow once its own token is spent.
        with self.signer.signing(spent) as sign:
            return [self.pades.finish_signing(application, prepared, sign, document_digest=digest)
                    for prepared, digest in zip(ready, digests)]

    def authorize_credential(self, application: Application, credential_id: str, password: Secret,
                             otp_code: str | None, hash_algorithm: HashAlgorithm, digests: list[bytes]) -> Authorization:
        """Authorize as the CSC API asks: a credential and the holder's factors, no account name;
        the account is the credential's holder. An unknown credential and one of an account the
        application may not serve are refused like a wrong factor, after the same work and
        counted the same way (under a stand-in name of the credential), as HashSigner.authorize
        refuses a credential the named account does not hold.

        Raises: as HashSigner.authorize.
        """
        holder = None
        if credential_id and len(credential_id) <= 64:
            with self.database.read() as conn:
                try:
                    holder = get_credential(conn, credential_id).username
                except NotFound:
                    pass
        if holder is not None and (application.all_accounts or holder in application.accounts):
            return self.signer.authorize(application, holder, password, otp_code, credential_id, hash_algorithm,
                                         digests)
        stand_in = "csc~" + hashlib.sha256(credential_id.encode("utf-8")).hexdigest()[:48]  # no account's name
        return self.signer.authorize(replace(application, all_accounts=True), stand_in, password, otp_code,
                                     credential_id, hash_algorithm, digests)
