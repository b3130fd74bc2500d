"""CaSetup: the CA's first start as steps that each commit on their own and can be resumed.

The steps are: the root (its key in the HSM, or an external root's certificate), the issuing CA,
the OCSP responder, the time-stamping authority and the first CRLs. Each step commits when it is
done; a set-up that stopped in between (a token limit, a crash, a kill) is finished by the next
``ca init`` or server start, which does only what is missing.

A step that generates a key records the key's label before asking the token for it. The token
cannot take part in the database's transaction, so a step interrupted after the key was made and
before the step committed would otherwise leave that key orphaned; instead the next attempt finds
the label on the token and uses the key (or destroys it, when the step now wants another
algorithm).
"""

from __future__ import annotations

import datetime
import logging
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.ca.builder import ca_certificate, signature_hash
from signserver.clock import Clock
from signserver.config import CaConfig
from signserver.errors import AlreadyExists, InvalidArgument, KeyNotFound, NotFound
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.keystore import HsmKeyStore, KeyInfo
from signserver.store.database import Database

log = logging.getLogger(__name__)

ROOT, ISSUING, OCSP, TSA = "root", "issuing", "ocsp-responder", "tsa"
CRLS = "crls"
STEPS = (ROOT, ISSUING, OCSP, TSA, CRLS)  # in the order they are done
ROOT_DAYS, ISSUING_DAYS = 20 * 365, 10 * 365
CLOCK_SKEW = datetime.timedelta(minutes=5)  # certificates start a little in the past

Checkpoint = Callable[[str], None]
"""Called after each step commits (with the step's name) and after each key is generated, before
its step commits (with ``key:`` and the key's purpose, e.g. ``key:ca-root``). Tests raise in it
to stand for a crash at that point."""


def _no_checkpoint(_step: str) -> None:
    pass


@dataclass(frozen=True)
class CaStatus:
    """What the CA's set-up has done so far."""

    root: x509.Certificate | None
    issuing: x509.Certificate | None
    ocsp_responder: x509.Certificate | None
    awaiting_external_root: bool
    tsa: x509.Certificate | None = None
    crls: frozenset[str] = frozenset()  # the authorities that published a CRL
    root_key_outside: bool = False  # an external root: no root CRL of ours to publish

    @property
    def steps(self) -> dict[str, bool]:
        """Each set-up step, in order, and whether it is done."""
        crls_done = ISSUING in self.crls and (self.root_key_outside or ROOT in self.crls)
        return {ROOT: self.root is not None, ISSUING: self.issuing is not None,
                OCSP: self.ocsp_responder is not None, TSA: self.tsa is not None, CRLS: crls_done}

    @property
    def missing(self) -> list[str]:
        return [step for step, done in self.steps.items() if not done]

    @property
    def ready(self) -> bool:
        return not self.missing

    @property
    def started(self) -> bool:
        """Whether any step was done (or an external root was asked for)."""
        return self.awaiting_external_root or len(self.missing) < len(STEPS)


class ServiceSteps(Protocol):
    """The authority's own operations that the last set-up steps are."""

    def make_service_key(self, role: str, operator: str) -> x509.Certificate: ...

    def publish_crls(self, root: bool = True) -> None: ...


def ca_name(config: CaConfig, role: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, config.country),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, config.organisation),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{config.name} {role}"),
    ])


class CaSetup:
    def __init__(self, database: Database, keys: HsmKeyStore, audit: AuditLog, clock: Clock, config: CaConfig,
                 service_steps: ServiceSteps):
        self._database = database
        self._keys = keys
        self._audit = audit
        self._clock = clock
        self._config = config
        self._service_steps = service_steps
        self._checkpoint: Checkpoint = _no_checkpoint

    def status(self) -> CaStatus:
        """Raises: StoreUnavailable."""
        with self._database.read() as conn:
            root, issuing, responder, tsa = (repo.get_authority(conn, n) for n in (ROOT, ISSUING, OCSP, TSA))
            published = repo.crl_authorities(conn)
        return CaStatus(root=root.certificate if root else None,
                        issuing=issuing.certificate if issuing else None,
                        ocsp_responder=responder.certificate if responder else None,
                        awaiting_external_root=issuing is not None and issuing.certificate is None,
                        tsa=tsa.certificate if tsa else None, crls=frozenset(published),
                        root_key_outside=root is not None and not root.key_id)

    # --- the two ways of setting up ---------------------------------------------------

    def initialise(self, operator: str, checkpoint: Checkpoint | None = None) -> CaStatus:
        """Create the root and the issuing CA (keys generated in the HSM), the OCSP responder, the
        TSA and the first CRLs; after an interrupted set-up (of either kind), do what is missing.

        Raises:
            AlreadyExists: the CA is set up, or awaits its external root's certificate.
            HsmError, UnsupportedAlgorithm, StoreUnavailable.
        """
        status = self.status()
        if status.ready:
            raise AlreadyExists("the CA is already initialised")
        if status.awaiting_external_root:
            raise AlreadyExists("the CA awaits its external root's certificate: install it with "
                                "`signserver ca init --issuing-cert ISSUING.pem --root-cert ROOT.pem`")
        with self._checkpoints(checkpoint):
            self._note_resumed(status, operator)
            if status.root is None:
                self._make_root(operator)
            if status.issuing is None:
                self._make_issuing(operator)
            self._finish(operator)
        return self.status()

    def begin_external_root(self, operator: str,
                            checkpoint: Checkpoint | None = None) -> x509.CertificateSigningRequest:
        """Generate the issuing CA's key in the HSM and return its CSR for an external root. Asked
        again before the root's certificate is installed, it returns a request for the same key.

        Raises:
            AlreadyExists: the CA has an issuing certificate, or a root of its own.
            HsmError, UnsupportedAlgorithm, StoreUnavailable.
        """
        status = self.status()
        if status.issuing is not None:
            raise AlreadyExists("the CA is already initialised" if status.ready else
                                "the CA has its issuing certificate: run `signserver ca init` to finish its set-up")
        if status.root is not None:
            raise AlreadyExists("the set-up of a CA with a root of its own is under way: run `signserver ca init` "
                                "to finish it")
        with self._checkpoints(checkpoint):
            with self._database.read() as conn:
                issuing = repo.get_authority(conn, ISSUING)
            if issuing is None:
                self.discard_leftover_key("ca-root")  # a root of our own was begun and abandoned
                key_id = self.new_key(KeyAlgorithm(self._config.issuing_key_algorithm), "ca-issuing")
                with self._database.transaction() as conn:
                    if repo.add_authority(conn, ISSUING, key_id, None, self._clock.now()):
                        self._audit.append(conn, self._clock.now(), "ca.external_root_requested", operator, "ca")
                    repo.delete_pending_key(conn, "ca-issuing")
                    issuing = repo.get_authority(conn, ISSUING)
                self._checkpoint("external-root-requested")
        return issuing_csr(hsm_private_key(self._keys, issuing.key_id), ca_name(self._config, "Issuing CA"))

    def complete_external_root(self, issuing_der: bytes, root_der: bytes, operator: str,
                               checkpoint: Checkpoint | None = None) -> CaStatus:
        """Install the issuing CA certificate signed by an external root, then make the OCSP
        responder, the TSA and the CRLs. Given the same certificates again after an interruption,
        it finishes what is missing.

        Raises:
            InvalidArgument: not certificates, not for our key, not signed by that root, not a CA,
                a key usage without keyCertSign and cRLSign, ended or not yet begun.
            NotFound: no external-root request is pending (nor installed with these certificates).
            HsmError, StoreUnavailable.
        """
        with self._database.read() as conn:
            issuing_authority, root_authority = repo.get_authority(conn, ISSUING), repo.get_authority(conn, ROOT)
        if issuing_authority is None:
            raise NotFound("no issuing CA key is waiting for an external certificate; run `ca init --external-root`")
        issuing, root = _load_certificates(issuing_der, root_der)
        if issuing_authority.certificate is not None:
            installed = root_authority is not None and not root_authority.key_id \
                and issuing_authority.certificate == issuing and root_authority.certificate == root
            if not installed:
                raise NotFound("no issuing CA key is waiting for an external certificate; "
                               "run `ca init --external-root`")
        else:
            if issuing.public_key() != self._keys.public_key(issuing_authority.key_id):
                raise InvalidArgument("the issuing certificate is not for the key this CA generated")
            try:
                issuing.verify_directly_issued_by(root)
            except Exception as exc:  # cryptography raises several kinds here
                raise InvalidArgument(f"the issuing certificate is not signed by that root: {exc}") from None
            now = self._clock.now()
            check_issuing_certificate(issuing, now)
            with self._database.transaction() as conn:
                repo.put_authority(conn, ROOT, "", root.public_bytes(Encoding.DER), now)  # key outside
                repo.put_authority(conn, ISSUING, issuing_authority.key_id, issuing.public_bytes(Encoding.DER), now)
                self._audit.append(conn, now, "ca.external_root_installed", operator, "ca",
                                   issuing=format(issuing.serial_number, "x"))
        with self._checkpoints(checkpoint):
            if issuing_authority.certificate is None:
                self._checkpoint(ISSUING)
            else:
                self._note_resumed(self.status(), operator)
            self._finish(operator)
        return self.status()

    # --- keys made for a step -----------------------------------------------------------

    def new_key(self, algorithm: KeyAlgorithm, purpose: str) -> str:
        """The key id of :meth:`new_key_info`'s key. Raises: as it."""
        return self.new_key_info(algorithm, purpose).key_id

    def new_key_info(self, algorithm: KeyAlgorithm, purpose: str) -> KeyInfo:
        """The key for a step that needs a new key for ``purpose`` (``ca-root``, ``ca-tsa``, ...):
        the key generated for it by an attempt that did not commit, when it is still on the token,
        of this algorithm, and used by no authority; otherwise a newly generated one, whose label
        is recorded first. The key found may be one another node is generating for the same step
        at the same time: whichever of the two commits first uses it, and the other, finding it in
        use, leaves it on the token.

        Raises: UnsupportedAlgorithm, HsmError, StoreUnavailable.
        """
        left = self._leftover_key(purpose)
        if left is not None:
            if left.algorithm is algorithm:
                log.info("using key %r, generated for %s by a set-up step that was interrupted", left.label, purpose)
                return left
            log.info("destroying key %r, generated for %s by an interrupted step, as %s is wanted now",
                     left.label, purpose, algorithm.value)
            self._keys.delete(left.key_id)
        # Twelve random digits: servers that share a token, and processes whose clocks stand still
        # (a test clock), label keys in the same second; six gave one clash in a few thousand keys.
        label = f"{purpose}-{self._clock.now():%Y%m%d%H%M%S}-{secrets.randbelow(10**12):012d}"
        with self._database.transaction() as conn:
            repo.put_pending_key(conn, purpose, label, algorithm.value, self._clock.now())
        key = self._keys.generate(algorithm, label)
        self._checkpoint(f"key:{purpose}")
        return key

    def discard_leftover_key(self, purpose: str) -> None:
        """Destroy the key an interrupted step generated for ``purpose``, when no authority uses it.

        Raises: HsmError, StoreUnavailable.
        """
        left = self._leftover_key(purpose)
        if left is not None:
            log.info("destroying key %r, generated for %s by a set-up that was not finished", left.label, purpose)
            self._keys.delete(left.key_id)
        with self._database.transaction() as conn:
            repo.delete_pending_key(conn, purpose)

    def _leftover_key(self, purpose: str) -> KeyInfo | None:
        with self._database.read() as conn:
            pending = repo.get_pending_key(conn, purpose)
            in_use = repo.authority_key_ids(conn)
        if pending is None:
            return None
        try:
            found = self._keys.find_by_label(pending.label)
        except KeyNotFound:
            return None  # the attempt stopped before the token made it
        if found.key_id in in_use:
            return None
        try:
            self._keys.public_key(found.key_id)
        except KeyNotFound:
            # The token lost its public half as it was made (signserver/hsm/new_objects.py), in a
            # version that did not check: no certificate can be made for it.
            log.warning("destroying key %r, generated for %s by an interrupted step: its public half is not on "
                        "the token", found.label, purpose)
            self._keys.delete(found.key_id)
            return None
        return found

    # --- the steps ----------------------------------------------------------------------

    def _make_root(self, operator: str) -> None:
        now = self._clock.now() - CLOCK_SKEW
        key_id = self.new_key(KeyAlgorithm(self._config.root_key_algorithm), "ca-root")
        private = hsm_private_key(self._keys, key_id)
        name = ca_name(self._config, "Root CA")
        root = ca_certificate(subject=name, public_key=private.public_key(), issuer_name=name, issuer_key=private,
                              issuer_public_key=private.public_key(), serial=x509.random_serial_number(),
                              not_before=now, days=ROOT_DAYS, path_length=1, crl_url=None, ca=self._config)
        with self._database.transaction() as conn:
            # Made unless another set-up made it first, even one committing at this moment.
            made_meanwhile = None if repo.add_authority(conn, ROOT, key_id, root.public_bytes(Encoding.DER), now) \
                else repo.get_authority(conn, ROOT)
            if made_meanwhile is None:
                repo.delete_pending_key(conn, "ca-root")
                self._audit.append(conn, self._clock.now(), "ca.root_created", operator, "ca",
                                   root=format(root.serial_number, "x"))
        self._drop_unless_used(key_id, made_meanwhile)
        self._checkpoint(ROOT)

    def _make_issuing(self, operator: str) -> None:
        now = self._clock.now() - CLOCK_SKEW
        with self._database.read() as conn:
            root_authority = repo.get_authority(conn, ROOT)
        root, root_private = root_authority.certificate, hsm_private_key(self._keys, root_authority.key_id)
        key_id = self.new_key(KeyAlgorithm(self._config.issuing_key_algorithm), "ca-issuing")
        issuing = issuing_certificate(self._config, ca_name(self._config, "Issuing CA"), self._keys.public_key(key_id),
                                      root, root_private, x509.random_serial_number(), now)
        with self._database.transaction() as conn:
            made_meanwhile = None if repo.add_authority(conn, ISSUING, key_id, issuing.public_bytes(Encoding.DER),
                                                        now) else repo.get_authority(conn, ISSUING)
            if made_meanwhile is None:
                repo.delete_pending_key(conn, "ca-issuing")
                self._audit.append(conn, self._clock.now(), "ca.initialised", operator, "ca",
                                   root=format(root.serial_number, "x"), issuing=format(issuing.serial_number, "x"))
        self._drop_unless_used(key_id, made_meanwhile)
        self._checkpoint(ISSUING)

    def _drop_unless_used(self, key_id: str, made_meanwhile: repo.Authority | None) -> None:
        """Two set-ups that ran at once (two nodes starting): the step that committed second
        destroys the key it made, so that none is orphaned. Raises: HsmError."""
        if made_meanwhile is not None and made_meanwhile.key_id != key_id:
            log.info("another set-up did the %s step meanwhile; destroying the key made here", made_meanwhile.name)
            self._keys.delete(key_id)

    def _finish(self, operator: str) -> None:
        """The steps after the issuing CA, those not done yet."""
        status = self.status()
        for role, done in ((OCSP, status.ocsp_responder), (TSA, status.tsa)):
            if done is None:
                self._service_steps.make_service_key(role, operator)  # unless another set-up made it meanwhile
                self._checkpoint(role)
        if not status.steps[CRLS]:
            self._service_steps.publish_crls()
            self._checkpoint(CRLS)

    def _note_resumed(self, status: CaStatus, operator: str) -> None:
        if not status.started or status.ready:
            return
        done = [step for step, finished in status.steps.items() if finished]
        log.info("resuming the CA's set-up: done %s; making %s", ", ".join(done) or "nothing",
                 ", ".join(status.missing))
        with self._database.transaction() as conn:
            self._audit.append(conn, self._clock.now(), "ca.setup_resumed", operator, "ca",
                               done=",".join(done), missing=",".join(status.missing))

    @contextmanager
    def _checkpoints(self, checkpoint: Checkpoint | None) -> Iterator[None]:
        self._checkpoint = checkpoint or _no_checkpoint
        try:
            yield
        finally:
            self._checkpoint = _no_checkpoint


def issuing_csr(private, subject: x509.Name) -> x509.CertificateSigningRequest:
    """The issuing CA's request for an external root to sign, by its key on the token (``private``)."""
    return (x509.CertificateSigningRequestBuilder().subject_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(private, signature_hash(private)))


def issuing_certificate(config: CaConfig, subject: x509.Name, public_key, root: x509.Certificate, root_private,
                        serial: int, not_before: datetime.datetime) -> x509.Certificate:
    """The issuing CA's certificate as this CA's own root signs it: ISSUING_DAYS from
    ``not_before``, never beyond the root's end; its status on the root's CRL, the root's
    certificate named by authority information access (caIssuers)."""
    return ca_certificate(subject=subject, public_key=public_key, issuer_name=root.subject, issuer_key=root_private,
                          issuer_public_key=root.public_key(), serial=serial, not_before=not_before,
                          days=ISSUING_DAYS, path_length=0, crl_url=config.url("crl/root.crl"), ca=config,
                          ca_issuers_url=config.url("ca/root.crt"), until=root.not_valid_after_utc)


def check_issuing_certificate(issuing: x509.Certificate, now: datetime.datetime) -> None:
    """Whether the issuing CA can work with this certificate: a CA's (basicConstraints cA), whose
    key may sign certificates and CRLs (when it has a key usage), valid now.

    Raises: InvalidArgument: what is wrong with it.
    """
    try:
        constraints = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidArgument("the issuing certificate is not a CA certificate: its basicConstraints must say cA")
    try:
        usage = issuing.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None  # unrestricted
    if usage is not None and not (usage.key_cert_sign and usage.crl_sign):
        raise InvalidArgument("the issuing certificate's key usage must allow keyCertSign and cRLSign: the issuing "
                              "CA signs the certificates it issues and its CRLs")
    if now >= issuing.not_valid_after_utc:
        raise InvalidArgument(f"the issuing certificate ended on {issuing.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if issuing.not_valid_before_utc > now + CLOCK_SKEW:
        raise InvalidArgument(f"the issuing certificate begins on {issuing.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
                              "install it once it has begun")


def _load_certificates(issuing_der: bytes, root_der: bytes) -> tuple[x509.Certificate, x509.Certificate]:
    """Raises: InvalidArgument: either is not an X.509 certificate (PEM or DER)."""
    try:
        return load_certificate(issuing_der), load_certificate(root_der)
    except ValueError:
        raise InvalidArgument("the issuing and root certificates must be X.509 (PEM or DER)") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate in PEM or DER. Raises: ValueError: neither."""
    return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
