"""Two nodes (two services on one database and one token) running the same background pass at
once, as a pass that outlasts its lease overlaps the next holder's (signserver/store/leases.py):
each pass's work is done once, whichever node does it, and neither node's pass fails for the
other's."""

from __future__ import annotations

import datetime
import threading

import pytest
from cryptography import x509
from sqlalchemy import func, insert, select

from signserver.ca import repository as repo
from signserver.ca import revocation
from signserver.ca.authority import ISSUING, OCSP, SUPERSEDED_KEY_GRACE, TSA, CertificateAuthority
from signserver.clock import ManualClock, epoch_seconds
from signserver.store.schema import audit_log, certificates, pending_ca_keys, superseded_ca_keys
from tests.ca.conftest import own_ca
from tests.ca.test_service_key_removal import RENEWAL_DUE
from tests.ca.test_setup_resume import Crash, crash_at
from tests.conftest import ON_POSTGRESQL, enrol, service_with, service_with_ca


def at_once(*calls, meeting: threading.Barrier | None = None) -> list:
    """Run the calls in threads started together; returns what each returned or raised. A call that
    raises breaks ``meeting``, so that the others do not wait at it for a node that never comes."""
    start = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        start.wait()
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 -- what each node's pass ended with
            results[index] = exc
            if meeting is not None:
                meeting.abort()
    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def meeting_after(meeting: threading.Barrier, call):
    """``call``, after which each node waits until the other has made the same call: both passes
    have then read what they act on before either commits what it did."""
    def met(*args, **kwargs):
        try:
            return call(*args, **kwargs)
        finally:
            try:
                meeting.wait()
            except threading.BrokenBarrierError:
                pass  # the other node's pass ended before coming here
    return met


def failures(results: list) -> list:
    return [result for result in results if isinstance(result, Exception)]


def audited(service, event: str) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(audit_log).where(audit_log.c.event == event)).scalar()


def test_two_nodes_renewing_the_service_certificates_at_once_renew_each_once(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    a = service_with_ca(config, tmp_path / "shared.db", clock)
    b = service_with(config, a.database.url, clock)
    with a.database.read() as conn:
        before = {role: repo.get_authority(conn, role).key_id for role in (OCSP, TSA)}
        issued_before = conn.execute(select(func.count()).select_from(certificates)).scalar()
    audited_before = audited(a, "certificate.issued")
    keys_before = {key.key_id for key in a.keys.list()}
    meeting = threading.Barrier(2)
    for node in (a, b):  # both have generated a new key for the role before either records it
        node.ca._new_key = meeting_after(meeting, node.ca._new_key)
    clock.advance(seconds=RENEWAL_DUE.total_seconds())

    results = at_once(a.ca.renew_service_keys_if_due, b.ca.renew_service_keys_if_due, meeting=meeting)

    assert not failures(results), results
    assert sorted(role for renewed in results for role in renewed) == [OCSP, TSA]  # one node each, or one both
    with a.database.read() as conn:
        after = {role: repo.get_authority(conn, role).key_id for role in (OCSP, TSA)}
        issued = conn.execute(select(func.count()).select_from(certificates)).scalar() - issued_before
        superseded = set(conn.execute(select(superseded_ca_keys.c.key_id)).scalars())
        pending = conn.execute(select(func.count()).select_from(pending_ca_keys)).scalar()
    assert issued == 2 and audited(a, "certificate.issued") - audited_before == 2
    assert superseded == set(before.values())  # the keys replaced, not the other node's new ones
    assert pending == 0
    # The key the node that lost generated is gone from the token: the only new keys are those in use.
    assert {key.key_id for key in a.keys.list()} - keys_before == set(after.values())
    for node in (a, b):  # both sign with the new keys
        assert node.ca.service_key(OCSP)[0] == after[OCSP] and node.ca.service_key(TSA)[0] == after[TSA]


def test_a_key_one_node_is_generating_that_another_node_renews_with_is_kept_and_certified_once(config, tmp_path):
    """The other node finds the key labelled as being generated for the role (as it finds one an
    interrupted renewal left: CaSetup.new_key_info) and commits first, with it."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    a = service_with_ca(config, tmp_path / "shared.db", clock)
    b = service_with(config, a.database.url, clock)
    with a.database.read() as conn:
        replaced = repo.get_authority(conn, OCSP).key_id
        issued_before = conn.execute(select(func.count()).select_from(certificates)).scalar()
    keys_before = {key.key_id for key in a.keys.list()}
    renewed_by_b = []
    generate = a.ca._new_key

    def generate_then_b_renews(*args):
        key = generate(*args)
        renewed_by_b.append(b.ca.renew_service_key(OCSP, "ca"))
        return key
    a.ca._new_key = generate_then_b_renews

    renewed_by_a = a.ca.renew_service_key(OCSP, "ca")

    with a.database.read() as conn:
        current = repo.get_authority(conn, OCSP)
        issued = conn.execute(select(func.count()).select_from(certificates)).scalar() - issued_before
        superseded = set(conn.execute(select(superseded_ca_keys.c.key_id)).scalars())
        pending = conn.execute(select(func.count()).select_from(pending_ca_keys)).scalar()
    assert renewed_by_a == renewed_by_b[0] == current.certificate and issued == 1
    assert {key.key_id for key in a.keys.list()} - keys_before == {current.key_id}  # on the token, and alone
    assert superseded == {replaced} and pending == 0


def test_a_set_up_resumed_on_two_nodes_at_once_makes_the_missing_service_key_once(config, tmp_path):
    """A set-up stopped before the TSA, resumed by two nodes starting: the other node makes the
    TSA's key and certificate after this node found them missing, before it makes them."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    a = service_with(config, tmp_path / "shared.db", clock)
    with pytest.raises(Crash):
        a.ca.initialise("operator:test", checkpoint=crash_at(OCSP))
    b = service_with(config, a.database.url, clock)
    keys_before = {key.key_id for key in a.keys.list()}
    read_status, reads = b.ca._setup.status, []

    def status_then_the_other_node_resumes():
        status = read_status()
        reads.append(status)
        if len(reads) == 2:  # the one the set-up's last steps are chosen by
            a.ca.initialise("operator:test")
        return status
    b.ca._setup.status = status_then_the_other_node_resumes

    b.ca.initialise("operator:test")

    assert reads[1].missing == [TSA, "crls"]
    with a.database.read() as conn:
        tsa = repo.get_authority(conn, TSA)
        superseded = repo.superseded_keys(conn)
        tsa_certificates = conn.execute(select(func.count()).select_from(certificates)
                                        .where(certificates.c.profile == "timestamping")).scalar()
    assert tsa_certificates == 1 and superseded == []
    assert {key.key_id for key in a.keys.list()} - keys_before == {tsa.key_id}
    assert b.ca.service_key(TSA) == (tsa.key_id, tsa.certificate)


def test_two_nodes_setting_up_the_ca_at_once_both_end_set_up(config, tmp_path, monkeypatch):
    """Two nodes started at once on a new database each set the CA up. Each has read that the
    issuing CA has no CRL yet (so no row to lock) when it signs the first: the second to store it
    used to fail on the first's (PostgreSQL: a duplicate key; the node's start failed)."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    a = service_with(config, tmp_path / "shared.db", clock)
    b = service_with(config, a.database.url, clock)
    # Neither publishes before both have found no CRL and come to publish one: otherwise a node
    # slower than the other (a busy machine) finds the first's CRL and rightly signs none.
    decided = threading.Barrier(2, timeout=60)
    publish = CertificateAuthority.publish_crls

    def publish_once_both_decided(authority, *args, **kwargs):
        try:
            decided.wait()
        except threading.BrokenBarrierError:
            raise AssertionError("the other node never came to publish its CRLs") from None
        return publish(authority, *args, **kwargs)
    monkeypatch.setattr(CertificateAuthority, "publish_crls", publish_once_both_decided)
    # Both have read the last CRL's number before either stores its own; a node that cannot come
    # (held behind the other's lock) breaks the meeting after a while.
    meeting = threading.Barrier(2, timeout=3)
    monkeypatch.setattr(revocation, "revoked_entries", meeting_after(meeting, revocation.revoked_entries))
    keys_before = {key.key_id for key in a.keys.list()}

    results = at_once(lambda: a.ca.initialise("server:bootstrap"), lambda: b.ca.initialise("server:bootstrap"))

    assert not failures(results), results
    assert all(status.ready for status in results)
    with a.database.read() as conn:
        made = dict(conn.execute(select(certificates.c.profile, func.count()).group_by(certificates.c.profile)).all())
        in_use = repo.current_authority_key_ids(conn)
        issuing_crl = revocation.stored_crl(conn, ISSUING)
    assert made == {"ocsp-responder": 1, "timestamping": 1}, made  # the service certificates, made once
    # One key each for the root, the issuing CA, the responder and the TSA, every one of them in use.
    assert {key.key_id for key in a.keys.list()} - keys_before == in_use and len(in_use) == 4
    assert issuing_crl.number == 2  # each node signed one, numbered one after the other
    assert x509.load_der_x509_crl(issuing_crl.der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


def test_two_nodes_removing_superseded_keys_at_once_record_each_removal_once(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    a = own_ca(config, tmp_path / "shared.db", clock)  # its keys leave the token
    b = service_with(config, a.database.url, clock)
    clock.advance(seconds=RENEWAL_DUE.total_seconds())
    assert a.ca.renew_service_keys_if_due() == [OCSP, TSA]  # two keys superseded
    with a.database.read() as conn:
        superseded = sorted(key.key_id for key in repo.superseded_keys(conn))
    meeting = threading.Barrier(2)
    for node in (a, b):  # both have read the keys due and asked the token to destroy one before either forgets it
        node.ca._keys.delete = meeting_after(meeting, node.ca._keys.delete)
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)

    results = at_once(a.ca.remove_superseded_keys, b.ca.remove_superseded_keys, meeting=meeting)

    assert not failures(results), results
    assert audited(a, "ca.superseded_key_removed") == 2
    assert sorted(key for removed in results for key in removed) == superseded  # each reported by one node
    with a.database.read() as conn:
        assert repo.superseded_keys(conn) == []


def due_certificates(config, tmp_path) -> tuple:
    """Two nodes on a database with 250 certificates due for their expiry notice (three batches of
    the pass), soonest first."""
    clock = ManualClock(datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc))
    a = service_with(config, tmp_path / "notices.db", clock)
    a.ca.initialise("operator:test")
    created, _ = enrol(a, "notice-holder")
    now = epoch_seconds(clock.now())
    due = [f"{i:x}" for i in range(0x10000, 0x10000 + 250)]
    with a.database.transaction() as conn:
        template = dict(conn.execute(select(certificates).limit(1)).mappings().first())
        conn.execute(insert(certificates), [
            dict(template, serial=serial, account_id=created.account.id, credential_id=None, predecessor_serial=None,
                 status="valid", issued_at=now - 1000, not_after=now + 86400 + i) for i, serial in enumerate(due)])
    return a, service_with(config, a.database.url, clock), due


def check_noticed_once(service, due: list[str], revoked: list[str], sent: int) -> None:
    """A certificate revoked before the pass came to it is not noticed; every other one is, once."""
    with service.database.read() as conn:
        noticed = set(conn.execute(select(certificates.c.serial).where(
            certificates.c.expiry_notice_at.is_not(None))).scalars())
    assert noticed | set(revoked) == set(due)
    assert sent == len(noticed) == audited(service, "certificate.expiry_notice")


def test_an_expiry_pass_on_one_node_and_revocations_on_another_do_not_fail_each_other(config, tmp_path):
    a, b, due = due_certificates(config, tmp_path)
    # Certificates the pass reaches late in its first batch, and in the later ones: it has
    # appended audit records for the ones before when it comes to them.
    revoked = due[60:100:8] + due[160:200:8]

    results = at_once(a.ca.send_expiry_notices,
                      *[lambda serial=serial: b.ca.revoke(serial, "superseded", "ra:test") for serial in revoked])

    assert not failures(results), failures(results)
    check_noticed_once(a, due, revoked, results[0])


def _outcome(call, *args):
    try:
        return call(*args)
    except Exception as exc:  # noqa: BLE001 -- what the call ended with
        return exc


@pytest.mark.skipif(not ON_POSTGRESQL, reason="row locks are PostgreSQL's: SQLite's writers take turns, whole")
def test_a_revocation_holding_its_certificate_while_an_expiry_pass_holds_the_audit_chain_does_not_deadlock(
        config, tmp_path):
    """The revocation has locked its certificate's row and appends its audit record once the pass
    has appended its first one (and holds ``audit_head``); the certificate being revoked is the
    pass's second."""
    a, b, due = due_certificates(config, tmp_path)
    row_locked, chain_held = threading.Event(), threading.Event()
    append_revocation, append_notice = b.audit.append, a.audit.append

    def revocation_appends(*args, **kwargs):
        row_locked.set()  # the revocation's UPDATE came before
        assert chain_held.wait(60), "the expiry pass never appended a record"  # a guard, not a timing
        return append_revocation(*args, **kwargs)

    def pass_appends(*args, **kwargs):
        record = append_notice(*args, **kwargs)
        chain_held.set()
        return record
    b.audit.append, a.audit.append = revocation_appends, pass_appends
    revoked = due[1]
    revocation: list = []
    revoking = threading.Thread(target=lambda: revocation.append(
        _outcome(b.ca.revoke, revoked, "superseded", "ra:test")))
    revoking.start()
    assert row_locked.wait(60), "the revocation never came to its audit record"

    sent = _outcome(a.ca.send_expiry_notices)
    chain_held.set()  # should the pass have failed before its first record
    revoking.join()

    assert not failures([sent, *revocation]), failures([sent, *revocation])
    check_noticed_once(a, due, [revoked], sent)
