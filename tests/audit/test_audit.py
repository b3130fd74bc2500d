"""The audit chain: every kind of tampering is reported; the chain continues across restarts."""

from __future__ import annotations


import pytest
from sqlalchemy import delete, select, update

from signserver.audit.verify import verify_audit_log
from signserver.store.schema import audit_head, audit_log, audit_seals
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, enrol, service_with


@pytest.fixture
def logged(fresh_service):
    """A service whose log has a few records, sealed up to the last but two."""
    for _ in range(2):
        enrol(fresh_service)  # two records each: account.created, key.generated
    fresh_service.sealer.seal()
    with fresh_service.database.transaction() as conn:
        fresh_service.audit.append(conn, fresh_service.clock.now(), "test.event", "tester", "x", n=1)
        fresh_service.audit.append(conn, fresh_service.clock.now(), "test.event", "tester", "x", n=2)
    return fresh_service


def report(service):
    sealer = service.sealer
    return verify_audit_log(service.database, sealer.pin, service.clock.now(), sealer.max_seal_age)


def test_untouched_log_is_intact(logged):
    result = report(logged)
    assert result.intact, result.problems
    assert (result.records, result.sealed_seq, result.seals) == (6, 4, 1)


def test_modified_record(logged):
    with logged.database.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="someone else"))
    assert "record 2 was modified" in report(logged).problems


def test_deleted_record(logged):
    with logged.database.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 3))
    problems = report(logged).problems
    assert "records 3 to 3 are missing" in problems


def test_reordered_records(logged):
    with logged.database.transaction() as conn:
        rows = {r.seq: r for r in conn.execute(select(audit_log).where(audit_log.c.seq.in_([2, 3])))}
        for seq, other in ((2, 3), (3, 2)):
            values = {k: v for k, v in rows[other]._mapping.items() if k != "seq"}
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(**values))
    problems = report(logged).problems
    assert any("does not follow" in p for p in problems)


def test_truncated_log_after_the_seal_is_caught_by_the_head(logged):
    with logged.database.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq > 5))
    assert any("cut off" in p for p in report(logged).problems)


def test_truncated_log_with_forged_head_is_caught_by_the_seal(logged):
    with logged.database.transaction() as conn:
        last = conn.execute(select(audit_log).where(audit_log.c.seq == 3)).one()
        conn.execute(delete(audit_log).where(audit_log.c.seq > 3))
        conn.execute(update(audit_head).values(seq=3, hash=last.hash))
    assert "record 4, sealed, is missing: the log was cut off" in report(logged).problems


def test_forged_seal_is_caught(logged):
    with logged.database.transaction() as conn:
        conn.execute(update(audit_seals).values(signature=b"0" * 70))
    assert any("seal 1 at record 4 does not verify" in p for p in report(logged).problems)


def test_chain_continues_across_a_restart(fresh_service, config, tmp_path, clock):
    enrol(fresh_service)
    fresh_service.close()
    restarted = service_with(config, tmp_path / "signserver.db", clock)
    enrol(restarted)
    restarted.sealer.seal()
    result = report(restarted)
    assert result.intact and result.records == 4 and result.sealed_seq == 4


def test_audit_verify_command(logged, state_dir):
    logged.sealer.seal()  # the records were written days ago by the test clock: unsealed, they would be stale
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=logged.database.url)
    ok = cli_forkserver.run([str(SIGNSERVER), "audit", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "INTACT" in ok.stdout, ok.stderr
    with logged.database.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(detail="{}"))
    # The next run goes on from the seal the first found intact: record 1 is not read again...
    again = cli_forkserver.run([str(SIGNSERVER), "audit", "verify"], env=env, capture_output=True, text=True)
    assert "found intact (--full walks them all)" in again.stdout, again.stdout + again.stderr
    # ... unless asked to.
    bad = cli_forkserver.run([str(SIGNSERVER), "audit", "verify", "--full"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "TAMPERED" in bad.stdout and "record 1 was modified" in bad.stdout


def test_secrets_never_reach_the_log(fresh_service, clock):
    from signserver.accounts import otp
    from signserver.hsm.algorithms import HashAlgorithm
    from signserver.secret import Secret
    from tests.conftest import PASSWORD

    created, seed = enrol(fresh_service)
    app, api_key = fresh_service.applications.create("audit-app")
    code = otp.code_at(seed, clock.now())
    token = fresh_service.signer.authorize(app, created.account.username, Secret(PASSWORD), code,
                                           created.credential.id, HashAlgorithm.SHA256, [bytes(32)])
    with fresh_service.database.transaction() as conn:
        text = " ".join(str(tuple(r)) for r in conn.execute(select(audit_log)))
    for secret in (PASSWORD, seed, created.recovery_code, token.token, api_key):
        assert secret not in text
