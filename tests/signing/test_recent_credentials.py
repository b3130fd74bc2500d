"""What a worker keeps of the credentials it lately found usable (signserver/signing/recent_credentials.py,
on PostgreSQL's way to a signature) only spares it a read: a change made elsewhere (another node, a
revocation, an operator's tool) stops, or lets through, the very next signature as a fresh read
would."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from signserver.errors import CredentialUnusable
from signserver.signing.recent_credentials import RecentCredentials
from signserver.store.schema import audit_log, certificates, credentials
from tests.signing.holders import assert_signed_by, authorize, digests, new_holder, sign
from tests.signing.test_package_lifecycle import certify, lifecycle, public_of  # noqa: F401 (a fixture)


def signatures_recorded(service) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(audit_log).where(audit_log.c.event == "signature")).scalar()


@pytest.fixture
def signed_once(lifecycle):
    """A certified holder, an activation token for two digests, the first signed: the worker has
    found the credential usable."""
    service, clock, app = lifecycle
    holder = new_holder(service)
    issued = certify(service, holder.account.username)
    wanted = digests("first", f"second {holder.account.username}")
    token = authorize(service, app, holder.account.username, holder.credential.id, wanted).token
    sign(service, app, holder.credential.id, token, wanted[:1])
    return service, clock, app, holder, issued, token, wanted[1:]


def test_a_certificate_revoked_elsewhere_stops_the_next_signature(signed_once):
    service, _, app, holder, issued, token, rest = signed_once
    with service.database.transaction() as conn:  # as another node's revocation reaches this one
        conn.execute(update(certificates).where(certificates.c.serial == issued.serial).values(status="revoked"))
    before = signatures_recorded(service)
    with pytest.raises(CredentialUnusable, match="revoked"):
        sign(service, app, holder.credential.id, token, rest)
    assert signatures_recorded(service) == before  # nothing spent, nothing recorded


def test_a_credential_disabled_elsewhere_stops_the_next_signature(signed_once):
    service, _, app, holder, _, token, rest = signed_once
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == holder.credential.id).values(status="disabled"))
    with pytest.raises(CredentialUnusable, match="disabled"):
        sign(service, app, holder.credential.id, token, rest)


def test_a_first_certificate_issued_since_lets_the_next_signature_through(lifecycle):
    service, _, app = lifecycle
    holder = new_holder(service)
    wanted = digests("before the certificate", f"after it {holder.account.username}")
    token = authorize(service, app, holder.account.username, holder.credential.id, wanted).token
    sign(service, app, holder.credential.id, token, wanted[:1])  # known usable, without a certificate
    issued = certify(service, holder.account.username)
    assert issued.credential_id == holder.credential.id
    # The worker knew the credential without a certificate: it reads it again and signs.
    assert_signed_by(public_of(service, holder.credential),
                     sign(service, app, holder.credential.id, token, wanted[1:]), wanted[1:])


def test_the_least_recently_used_entry_goes_first():
    recent = RecentCredentials(size=2)
    recent.keep("a", 1)
    recent.keep("b", 2)
    assert recent.get("a") == 1  # "b" is now the least recently used
    recent.keep("c", 3)
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (1, None, 3)
    recent.forget("a")
    assert recent.get("a") is None
