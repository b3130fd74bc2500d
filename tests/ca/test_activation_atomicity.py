"""The holder's online activation of a renewal is one change: a process killed at any point of it
leaves the old password, package credentials, certificate and revocation phrase as they were, or
the new ones all in place, never a mix; and the activation tried again finishes it, after which the
holder signs with the new certificate's key and revokes it with the new phrase.

A kill is simulated as a BaseException raised from inside a step (nothing after it runs, and
the database rolls back what was not committed), by wrapping a method of the service's real
objects for one attempt: the HSM and the database are the real ones."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from signserver.accounts.model import AccountKind
from signserver.accounts.passwords import SecretHasher
from signserver.accounts.repository import account_row
from signserver.ca.authority import CertificateRequest, HolderActivation
from signserver.errors import AlreadyRenewed, PermissionDenied
from signserver.secret import Secret
from signserver.store.schema import credentials, outbox
from tests.ca.conftest import certificates_of
from tests.conftest import PASSWORD, enrol, service_with_ca
from tests.signing.holders import CLOUD_SIGNATURE, assert_signed_by, authorize_and_sign, digests, no_otp_application

OPERATOR = "ra:test"
OLD_PHRASE = "OldPhrase2017"
NEW_PHRASE = "NewPhrase2026"
NEW_PASSWORD = "Brand-new-2026"


class Killed(BaseException):
    """The process dies here: nothing after the raise runs, nothing uncommitted is kept."""


@dataclass
class Holder:
    service: object
    app: object
    username: str
    emails: tuple[str, ...]
    first: object  # the certificate being renewed
    old_phrase: str | None
    new_password: str | None  # None: the holder enters the current password

    @property
    def password(self) -> str:
        return self.new_password or PASSWORD

    def activation(self) -> HolderActivation:
        if self.new_password is not None:
            return HolderActivation(new_password=Secret(self.new_password), revocation_phrase=Secret(NEW_PHRASE))
        return HolderActivation(holder_password=Secret(PASSWORD), revocation_phrase=Secret(NEW_PHRASE))

    def renew(self):
        return self.service.ca.renew(self.first.serial, OPERATOR, activation=self.activation())


def holder(service, *, new_password: bool, clock) -> Holder:
    """A corporate holder with a cloud-signature certificate. With ``new_password`` the
    certificate has expired (the account holds no valid one: the holder sets a new password) and
    the account was enrolled without a revocation phrase; else the certificate is valid, the
    holder enters the current password and had chosen a phrase at enrolment."""
    old_phrase = None if new_password else OLD_PHRASE
    fields = {"revocation_phrase": Secret(old_phrase)} if old_phrase else {}
    created, _ = enrol(service, f"act{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                       organisation="Example Lda", **fields)
    name = created.account.username
    first = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    if new_password:
        clock.advance(days=1096)
        assert service.ca.get(first.serial).status == "expired"
    return Holder(service, no_otp_application(service), name, created.account.emails, first, old_phrase,
                  NEW_PASSWORD if new_password else None)


@pytest.fixture
def service(config, tmp_path, clock):
    return service_with_ca(config, tmp_path / "signserver.db", clock)


def successor_of(h: Holder):
    """The certificate renewing ``h.first`` that is not revoked, or None."""
    live = [c for c in certificates_of(h.service, h.username)
            if c.predecessor_serial == h.first.serial and c.status != "revoked"]
    assert len(live) <= 1
    return live[0] if live else None


def matches(hasher: SecretHasher, stored: str | None, secret: str | None) -> bool:
    if secret is None:
        return not stored
    return bool(stored) and hasher.verify(stored, secret)


def observed_state(h: Holder) -> str:
    """"old" or "new": what the holder's account shows of the activation. Every part (the
    certificate, the revocation phrase, and for a new password the password, the old packages'
    credentials and the e-mail telling the holder) must tell the same; a mix fails here. Nothing
    here counts toward a lockout (the secrets are checked against their stored hashes)."""
    service = h.service
    hasher = SecretHasher(service.config.accounts)
    with service.database.read() as conn:
        row = account_row(conn, h.username)
        old_credential = conn.execute(select(credentials.c.status)
                                      .where(credentials.c.id == h.first.credential_id)).scalar()
        told = conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.recipient.in_(h.emails), outbox.c.subject.contains("Password changed"))).scalar()

    def which(old: bool, new: bool) -> str:
        return "old" if old and not new else "new" if new and not old else f"both={old and new}"

    facts = {"certificate": "new" if successor_of(h) else "old",
             "revocation phrase": which(matches(hasher, row.revocation_phrase_hash, h.old_phrase),
                                        matches(hasher, row.revocation_phrase_hash, NEW_PHRASE))}
    if h.new_password is not None:
        facts["password"] = which(hasher.verify(row.password_hash, PASSWORD),
                                  hasher.verify(row.password_hash, h.new_password))
        facts["old package credential"] = {"active": "old", "disabled": "new"}.get(old_credential, old_credential)
        facts["password e-mail"] = {0: "old", len(h.emails): "new"}.get(told, f"{told} e-mails")
    else:
        assert old_credential == "active"  # a renewal with the current password leaves the old key alone
    assert len(set(facts.values())) == 1, f"a mix of the old and the new activation: {facts}"
    return next(iter(facts.values()))


def assert_old_state_works(h: Holder) -> None:
    """The old certificate, password and phrase work exactly as before the activation."""
    service = h.service
    assert service.ca.get(h.first.serial).status == ("expired" if h.new_password else "valid")
    if h.new_password is None:  # the valid certificate still signs with the current password
        wanted = digests("old key after the failed activation")
        assert_signed_by(service.packages.public_key_der(key_id_of(h, h.first.credential_id)),
                         authorize_and_sign(service, h.app, h.username, h.first.credential_id, wanted), wanted)
    assert service.accounts.check_revocation_phrase(h.username, Secret(NEW_PHRASE)) is False
    if h.old_phrase:
        assert service.accounts.check_revocation_phrase(h.username, Secret(h.old_phrase))


def key_id_of(h: Holder, credential_id: str) -> str:
    with h.service.database.read() as conn:
        return conn.execute(select(credentials.c.key_id).where(credentials.c.id == credential_id)).scalar()


def token_objects(service) -> int:
    """Every object the service's token session sees (token objects and its session objects)."""
    return service.keys.session.run(lambda session: len(list(session.get_objects())), "count objects")


@contextlib.contextmanager
def killed_at(service, point: str):
    """Kill the process at ``point`` for the attempts made inside: "key made" right after the new
    holder key was made in the HSM and wrapped, or right after the named audit record of a step
    was written (in the step's transaction, before its commit)."""
    if point == "key made":
        make = service.packages.make

        def made_then_killed(*args, **kwargs):
            make(*args, **kwargs)
            raise Killed(point)
        service.packages.make = made_then_killed
        try:
            yield
        finally:
            del service.packages.make
        return
    append = service.audit.append

    def appended_then_killed(conn, now, event, *args, **kwargs):
        sequence = append(conn, now, event, *args, **kwargs)
        if event == point:
            raise Killed(point)
        return sequence
    service.audit.append = appended_then_killed
    try:
        yield
    finally:
        del service.audit.append


CURRENT_PASSWORD_POINTS = ["key made", "key.generated", "certificate.issued", "revocation_phrase.set"]
NEW_PASSWORD_POINTS = ["key made", "password.set", "key.generated", "certificate.issued", "revocation_phrase.set"]


@pytest.mark.parametrize("point", [*(("current password", p) for p in CURRENT_PASSWORD_POINTS),
                                   *(("new password", p) for p in NEW_PASSWORD_POINTS)],
                         ids=lambda p: f"{p[0]}-killed-after-{p[1]}")
def test_a_killed_activation_leaves_the_old_state_or_the_new_and_a_retry_finishes_it(service, clock, point):
    variant, where = point
    h = holder(service, new_password=variant == "new password", clock=clock)
    assert observed_state(h) == "old"
    objects = token_objects(service)

    with killed_at(service, where), pytest.raises(Killed):
        h.renew()

    assert token_objects(service) == objects  # the key made for the activation left nothing on the token
    state = observed_state(h)
    if state == "old":
        assert_old_state_works(h)
    clock.advance(seconds=30)

    # Tried again (the RA's retry, or its resume pass that asks for the successor): finished.
    if state == "old":
        renewed = h.renew()
    else:
        with pytest.raises(AlreadyRenewed):
            h.renew()
        renewed = successor_of(h)
    assert observed_state(h) == "new"
    assert renewed.serial == successor_of(h).serial and renewed.status == "valid"

    wanted = digests("signed after the activation", "and once more")
    signatures = authorize_and_sign(service, h.app, h.username, renewed.credential_id, wanted, h.password)
    assert_signed_by(service.packages.public_key_der(key_id_of(h, renewed.credential_id)), signatures, wanted)
    if h.old_phrase:
        with pytest.raises(PermissionDenied, match="revocation phrase is not right"):
            service.ca.revoke_by_holder(renewed.serial, h.username, Secret(h.old_phrase))
    revoked = service.ca.revoke_by_holder(renewed.serial, h.username, Secret(NEW_PHRASE), "keyCompromise")
    assert revoked.status == "revoked"


@pytest.mark.parametrize("variant", ["current password", "new password"])
def test_an_activation_changes_everything_at_once(service, clock, variant):
    h = holder(service, new_password=variant == "new password", clock=clock)
    renewed = h.renew()
    assert observed_state(h) == "new"
    wanted = digests("first signature with the renewed certificate")
    assert_signed_by(service.packages.public_key_der(key_id_of(h, renewed.credential_id)),
                     authorize_and_sign(service, h.app, h.username, renewed.credential_id, wanted, h.password),
                     wanted)
    assert service.ca.revoke_by_holder(renewed.serial, h.username, Secret(NEW_PHRASE)).status == "revoked"


def test_a_refused_activation_changes_nothing(service, clock):
    """An activation that fails when its certificate is recorded (here: a renewal of the same
    certificate committed while it was made) keeps no part of it: not the new password either."""
    h = holder(service, new_password=True, clock=clock)
    made = service.packages.make

    def renewed_meanwhile(*args, **kwargs):
        del service.packages.make  # once: the other renewal makes its own key
        wrapped = made(*args, **kwargs)
        service.ca.renew(h.first.serial, OPERATOR)  # the operator's renewal, committed first
        return wrapped
    service.packages.make = renewed_meanwhile
    try:
        with pytest.raises(AlreadyRenewed):
            h.renew()
    finally:
        if "make" in vars(service.packages):
            del service.packages.make
    hasher = SecretHasher(service.config.accounts)
    with service.database.read() as conn:
        row = account_row(conn, h.username)
        told = conn.execute(select(func.count()).select_from(outbox).where(outbox.c.recipient.in_(h.emails))).scalar()
    assert hasher.verify(row.password_hash, PASSWORD) and not hasher.verify(row.password_hash, NEW_PASSWORD)
    assert not row.revocation_phrase_hash and told == 0
    with service.database.read() as conn:
        status = conn.execute(select(credentials.c.status).where(credentials.c.id == h.first.credential_id)).scalar()
    assert status == "active"

