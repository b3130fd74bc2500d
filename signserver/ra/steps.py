"""RenewalSteps: what every renewal step shares: the RA's store, its clock and settings, the
registry and the core; a step is one transaction (load, move, save, audit, e-mails) and a renewal
that changed meanwhile is not overwritten (optimistic concurrency, ConcurrentUpdate)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Protocol

from signserver.clock import Clock
from signserver.ra import messages
from signserver.ra import renewal as machine
from signserver.ra.errors import StepRefused, core_error
from signserver.ra.renewal import Holder, Renewal, State
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase

HOLDER = "holder"
SYSTEM = "ra"
OUT_OF_ORDER = "out_of_order"  # errors.Refusal.reason of a step the renewal is not at


class Registry(Protocol):
    def fetch_identity(self, id_type: str, id_number: str, *, consent_reference: str): ...
    def compare_face(self, id_type: str, id_number: str, photo: bytes, media_type: str) -> float: ...


class Certificates(Protocol):
    """The part of signserver.client.CertificateClient the renewal needs."""
    def get_certificate(self, serial: str): ...
    def list_certificates(self, account: str = "", expiring_within_days: int = 0) -> list: ...
    def renew_certificate(self, serial: str, *, evidence, csr: bytes | None = None, holder_password: str = "",
                          new_password: str = "", revocation_phrase: str = ""): ...


class Documents(Protocol):
    """The part of signserver.client.SignServerClient the application document needs (the RA as an
    application of the core's DocumentService)."""
    def sign_pdf(self, document, destination, *, account: str, password: str, otp: str | None = None,
                 credential_id: str, **options): ...
    def verify_pdf(self, document): ...


class RenewalSteps:
    def __init__(self, database: RaDatabase, clock: Clock, settings: RaSettings, *, registry: Registry,
                 certificates: Certificates, documents: Documents | None = None, executor: Executor | None = None,
                 holder_registry: Registry | None = None):
        """``holder_registry``: the registry as the holder's requests ask it (one attempt, so a slow
        registry does not hold the holder's call; the background pass retries with ``registry``)."""
        self._database = database
        self._holder_registry = holder_registry or registry
        self._documents = documents  # None: the RA is not set up as an application of the core
        self._clock = clock
        self._settings = settings
        self._registry = registry
        self._certificates = certificates
        self._executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="activation")
        self._running: set[str] = set()  # renewals whose activation runs in this process
        self._running_lock = threading.Lock()

    def get(self, renewal_id: str) -> Renewal:
        """Raises: RenewalNotFound."""
        with self._database.transaction() as conn:
            return repository.get_renewal(conn, renewal_id)

    def renewals(self, states: tuple[State, ...] = (), account: str = "") -> list[Renewal]:
        with self._database.transaction() as conn:
            return repository.list_renewals(conn, states=states, account=account)

    def renewals_with_blocked_addresses(self, renewal_ids: Iterable[str]) -> set[str]:
        """Those of ``renewal_ids`` with an e-mail address blocked after too many codes or wrong
        codes (an operator may reopen them). Raises: StoreUnavailable."""
        with self._database.transaction() as conn:
            return repository.renewals_with_blocked_addresses(conn, renewal_ids)

    def serials_under_renewal(self, serials: Iterable[str]) -> set[str]:
        """Those of ``serials`` whose certificate has a renewal under way, read from the open
        renewals alone (however many finished ones the RA keeps). Raises: StoreUnavailable."""
        with self._database.transaction() as conn:
            return repository.serials_with_open_renewal(conn, serials)

    def _identity_changed(self, renewal: Renewal, actor: str, differences: list[str]) -> Renewal:
        """AC-AB-0014: the identity steps start over and the holder is e-mailed."""
        def changed(r, now, conn):
            repository.queue_email(conn, now, r.emails, *messages.verify_again(r.serial, r.profile, r.expires),
                                   renewal_id=r.id)
            return machine.identity_changed(r, differences, now)
        return self._step(renewal.id, actor, "identity_changed", changed, detail=", ".join(differences))

    def _holder(self, account: str) -> Holder:
        with self._database.transaction() as conn:
            holder = repository.find_holder(conn, account)
        if holder is None:
            raise StepRefused(f"the holder {account} is not registered with the RA", reason="holder_not_registered")
        return holder

    def _core(self, call, *args) -> Any:
        """Call the core; its unavailability becomes CoreUnavailable, a refusal StepRefused."""
        from signserver.client import SignServerClientError

        try:
            return call(*args)
        except SignServerClientError as exc:
            raise core_error(exc) from None

    def _step(self, renewal_id: str, actor: str, action: str, transition, detail: str = "") -> Renewal:
        """Load, move, save and audit in one transaction. Raises: RenewalNotFound, StepRefused
        (the transition's; "out_of_order" for one that gives no reason)."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            current = repository.get_renewal(conn, renewal_id)
            moved = _moved(transition, current, now, conn)
            saved = repository.save_renewal(conn, moved)
            repository.audit(conn, now, actor, action, renewal_id, detail or f"state={saved.state.value}")
            return saved

    def _save(self, read: Renewal, actor: str, action: str, transition, detail: str = "") -> Renewal:
        """Like _step, but over the renewal as it was ``read`` before a call outside: refused with
        ConcurrentUpdate when it changed since."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            moved = _moved(transition, read, now, conn)
            saved = repository.save_renewal(conn, moved)
            repository.audit(conn, now, actor, action, read.id, detail or f"state={saved.state.value}")
            return saved


def _moved(transition, renewal: Renewal, now, conn) -> Renewal:
    """``transition`` applied. The state machine refuses a step asked out of order (a form sent
    twice, an old page's form) without a reason: it gets "out_of_order" here, so that a page says
    it in its reader's language.

    Raises: StepRefused."""
    try:
        return transition(renewal, now, conn)
    except StepRefused as exc:
        if exc.reason:
            raise
        raise StepRefused(str(exc), help_code=exc.help_code, reason=OUT_OF_ORDER) from None
