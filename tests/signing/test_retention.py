"""The store's retention: expired activation tokens and their digests, expired CSC tokens and
operations go after their grace, a batch at a time; a pruned token stays refused."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest
from sqlalchemy import func, insert, select

from signserver.config import RetentionConfig, load_config
from signserver.errors import ActivationRefused, ConfigurationError
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.signing import activation
from signserver.signing.retention import IDLE_SECONDS, store_retention
from signserver.store.schema import (activation_token_digests, activation_tokens, csc_access_tokens, csc_operations,
                                     outbox)
from tests import cli_forkserver
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, enrol

ECDSA = SignatureAlgorithm.ECDSA_SHA256
GRACE = 3600


def retention(service, **settings):
    return store_retention(service.database, service.audit, service.clock,
                           RetentionConfig(**{"activation_grace_seconds": GRACE, **settings}))


def counts(service) -> tuple[int, int]:
    with service.database.read() as conn:
        return (conn.execute(select(func.count()).select_from(activation_tokens)).scalar(),
                conn.execute(select(func.count()).select_from(activation_token_digests)).scalar())


@pytest.fixture
def holder(fresh_service):
    created, _ = enrol(fresh_service)
    app, _ = fresh_service.applications.create(f"app-{created.account.username}", otp_required=False)
    return fresh_service, app, created


def authorize(service, app, created, digests):
    return service.signer.authorize(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                                    HashAlgorithm.SHA256, digests)


def issue_many(service, app, created, tokens: int, digests_each: int, days_ago: int = 0) -> None:
    """Tokens stored as Authorize stores them, without the factors' cost."""
    issued = service.clock.now() - datetime.timedelta(days=days_ago)
    with service.database.transaction() as conn:
        for t in range(tokens):
            activation.issue(conn, credential_id=created.credential.id, account_id=created.account.id,
                             application_id=app.id, algorithm=HashAlgorithm.SHA256,
                             digests=[hashlib.sha256(f"{t}/{d}".encode()).digest() for d in range(digests_each)],
                             now=issued, lifetime=datetime.timedelta(minutes=5))


def test_a_spent_token_is_removed_after_its_grace_and_stays_refused(holder):
    service, app, created = holder
    digest = hashlib.sha256(b"page").digest()
    token = authorize(service, app, created, [digest])
    service.signer.sign_hashes(app, created.credential.id, Secret(token.token), ECDSA, [digest])
    lifetime = service.config.authorization.token_lifetime_seconds
    service.clock.advance(seconds=lifetime + GRACE - 1)  # expired, but within the grace
    assert retention(service).prune_all().activation_tokens == 0
    assert counts(service) == (1, 1)
    service.clock.advance(seconds=2)
    done = retention(service).prune_all()
    assert (done.activation_tokens, done.activation_digests) == (1, 1)
    assert counts(service) == (0, 0)
    # Presented again, even with the clock turned back to when it was valid, it is refused.
    service.clock.advance(seconds=-(lifetime + GRACE + 1) + 1)
    with pytest.raises(ActivationRefused, match="not valid"):
        service.signer.sign_hashes(app, created.credential.id, Secret(token.token), ECDSA, [digest])


def test_an_unspent_token_goes_too_once_expired_beyond_the_grace(holder):
    service, app, created = holder
    digests = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    token = authorize(service, app, created, digests)
    service.signer.sign_hashes(app, created.credential.id, Secret(token.token), ECDSA, digests[:1])
    service.clock.advance(seconds=service.config.authorization.token_lifetime_seconds + GRACE + 1)
    retention(service).prune_all()
    assert counts(service) == (0, 0)
    with pytest.raises(ActivationRefused, match="not valid"):
        service.signer.sign_hashes(app, created.credential.id, Secret(token.token), ECDSA, digests[1:])


def test_tokens_go_in_bounded_batches(holder):
    service, app, created = holder
    issue_many(service, app, created, tokens=7, digests_each=4)  # 28 digest rows
    service.clock.advance(seconds=300 + GRACE + 1)
    issue_many(service, app, created, tokens=2, digests_each=1)  # young: kept
    store = retention(service, batch_rows=10)
    first = store.batch()
    assert first.activation_digests == 10 and first.activation_tokens <= 10
    seen = []
    total = store.prune_all(progress=lambda c: seen.append(c.total))
    assert first.activation_digests + total.activation_digests == 28
    assert first.activation_tokens + total.activation_tokens == 7
    assert len(seen) >= 3  # one report per batch, the last one empty
    assert counts(service) == (2, 2)


def test_expired_csc_tokens_and_operations_go(holder):
    service, app, _ = holder
    now = int(service.clock.now().timestamp())
    with service.database.transaction() as conn:
        for n, expires in enumerate((now - 10, now + 600)):
            conn.execute(insert(csc_access_tokens).values(token_hash=f"{n:064x}", application_id=app.id,
                                                          scope="service", expires_at=expires, created_at=now - 3600))
            conn.execute(insert(csc_operations).values(id_hash=f"{n:064x}", application_id=app.id, state="done",
                                                       started_at=now - 900, deadline=now - 600, expires_at=expires,
                                                       keep_seconds=60))
    done = retention(service).prune_all()
    assert (done.csc_access_tokens, done.csc_operations) == (1, 1)
    with service.database.read() as conn:
        assert conn.execute(select(csc_access_tokens.c.token_hash)).scalars().all() == [f"{1:064x}"]
        assert conn.execute(select(csc_operations.c.id_hash)).scalars().all() == [f"{1:064x}"]


def test_e_mails_sent_or_given_up_long_ago_go_and_waiting_ones_stay(holder):
    service, _, _ = holder
    now = int(service.clock.now().timestamp())
    day = 86_400
    rows = {"sent 31 days ago": {"sent_at": now - 31 * day}, "sent 29 days ago": {"sent_at": now - 29 * day},
            "given up 31 days ago": {"given_up_at": now - 31 * day},
            "given up 29 days ago": {"given_up_at": now - 29 * day}, "waiting for 40 days": {}}
    with service.database.transaction() as conn:
        for subject, done in rows.items():
            conn.execute(insert(outbox).values(created_at=now - 40 * day, recipient="holder@example.mo",
                                               subject=subject, body="...", next_attempt_at=now, **done))
    done = retention(service, outbox_keep_days=30).prune_all()
    assert done.outbox_messages == 2
    with service.database.read() as conn:
        assert sorted(conn.execute(select(outbox.c.subject)).scalars()) == [
            "given up 29 days ago", "sent 29 days ago", "waiting for 40 days"]


def test_the_background_round_rests_after_finding_nothing(holder):
    service, app, created = holder
    store = retention(service)
    issue_many(service, app, created, tokens=1, digests_each=1, days_ago=2)
    assert store.background_round().activation_tokens == 1
    assert store.background_round().total == 0  # nothing left: it rests
    issue_many(service, app, created, tokens=1, digests_each=1, days_ago=2)
    service.clock.advance(seconds=IDLE_SECONDS - 1)
    assert store.background_round().total == 0
    service.clock.advance(seconds=1)
    assert store.background_round().activation_tokens == 1


def test_the_retention_settings(tmp_path):
    path = tmp_path / "signserver.toml"
    path.write_text("[retention]\nactivation_grace_seconds = 600\naudit_keep_days = 90\nbatch_rows = 500\n")
    assert load_config(path, environ={}).retention == RetentionConfig(600, 90, 500, 30)
    assert load_config(None, environ={}).retention == RetentionConfig(86_400, None, 1000, 30)
    path.write_text("[retention]\noutbox_keep_days = 7\n")
    assert load_config(path, environ={}).retention.outbox_keep_days == 7
    with pytest.raises(ConfigurationError, match="retention.outbox_keep_days"):
        load_config(None, environ={"SIGNSERVER_RETENTION_OUTBOX_KEEP_DAYS": "0"})
    with pytest.raises(ConfigurationError, match="retention.batch_rows"):
        load_config(None, environ={"SIGNSERVER_RETENTION_BATCH_ROWS": "1"})


def test_store_prune_command(fresh_service, state_dir):
    created, _ = enrol(fresh_service)
    app, _ = fresh_service.applications.create(f"app-{created.account.username}", otp_required=False)
    # Tokens that expired long ago by the real clock the command uses.
    service = fresh_service
    issue_many(service, app, created, tokens=3, digests_each=2, days_ago=3650)
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=service.database.url)
    shown = cli_forkserver.run([str(SIGNSERVER), "store", "prune", "--json"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["activation_tokens"], report["activation_digests"]) == (3, 6)
    assert counts(service) == (0, 0)
