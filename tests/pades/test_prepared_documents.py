"""The two-step flow's prepared documents are data: prepared by one service, completed by another
that shares the database and the spool directory, taken once, removed when they expire."""

from __future__ import annotations

import datetime
import io
import json
import stat
import threading
from dataclasses import replace

import pytest
from sqlalchemy import delete, func, select

from signserver.accounts.model import AccountKind
from signserver.audit.log import AuditLog
from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock, SystemClock
from signserver.errors import InvalidArgument, NotFound
from signserver.hsm.algorithms import HashAlgorithm
from signserver.pades.document import PadesLevel
from signserver.pades.pending import COMPLETION_GRACE, PreparedDocuments, document_hash
from signserver.pades.prepared_signature import PreparedSignature
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from signserver.store.schema import prepared_documents
from tests.conftest import PASSWORD, enrol, service_with


def two_services(config, folder, clock):
    """Two services, as two workers would be: one database, one spool directory, nothing else."""
    spool = folder / "spool"
    services = [service_with(config, folder / "signserver.db", clock,
                             pades=replace(config.pades, spool_dir=spool)) for _ in range(2)]
    first = services[0]
    first.ca.initialise("operator:test")
    created, _ = enrol(first, holder_name="Weng Sam LUZIA KUAN", kind=AccountKind.CORPORATE,
                       organisation="Example Lda")
    first.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    app, _ = first.applications.create("two-step-app", otp_required=False)
    return services, app, created, spool


@pytest.fixture(scope="module")
def nodes(config, tmp_path_factory):
    """Real time: the signatures are verified against it."""
    return two_services(config, tmp_path_factory.mktemp("nodes"), SystemClock())


@pytest.fixture(scope="module")
def timed(config, tmp_path_factory):
    """A clock the tests move: for lifetimes."""
    clock = ManualClock(datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc))
    return (*two_services(config, tmp_path_factory.mktemp("timed"), clock), clock)


def prepare(service, app, created, level=PadesLevel.B_B, data: bytes | None = None):
    return service.pades.prepare_pdf(app, created.credential.id, io.BytesIO(data or sample_pdf(2)), level,
                                     StampOptions())


def authorize(service, app, created, digest: bytes) -> Secret:
    return Secret(service.signer.authorize(app, created.account.username, Secret(PASSWORD), None,
                                           created.credential.id, HashAlgorithm.SHA256, [digest]).token)


def rows(service) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(prepared_documents)).scalar_one()


def files(spool) -> list[str]:
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


@pytest.mark.parametrize("level", list(PadesLevel), ids=lambda level: level.value)
def test_prepared_by_one_service_completed_by_another(nodes, level):
    (first, second), app, created, spool = nodes
    pending = prepare(first, app, created, level)
    token = authorize(first, app, created, pending.digest)
    out = io.BytesIO()
    digest = second.pades.complete_pdf(app, pending.id, token, out)

    verdict = second.pades.verify_pdf(io.BytesIO(out.getvalue()))
    report = verdict.signatures[0]
    assert verdict.verdict, verdict.reason
    assert report.intact and report.valid and report.trusted, report.summary
    assert report.level == level.value
    assert (report.revocation == "embedded") == level.long_term
    with second.database.read() as conn:
        audited = [json.loads(r.detail) for r in AuditLog.records(conn) if r.event == "signature.pdf"]
    assert audited[-1]["document"] == pending.digest.hex() and audited[-1]["signed"] == digest.hex()
    assert files(spool) == [] and rows(first) == 0  # completed: row and file gone
    with pytest.raises(NotFound):
        first.pades.complete_pdf(app, pending.id, token, io.BytesIO())


def test_two_completions_racing_for_one_document_sign_it_once(nodes):
    """Two workers, each with a token the holder gave for the document's digest: one signs, the
    other finds the document taken."""
    (first, second), app, created, spool = nodes
    pending = prepare(first, app, created)
    tokens = [authorize(first, app, created, pending.digest) for _ in range(2)]
    start = threading.Barrier(2)
    outcomes = []

    def complete(service, token):
        start.wait()
        try:
            outcomes.append(service.pades.complete_pdf(app, pending.id, token, io.BytesIO()))
        except NotFound as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=complete, args=pair) for pair in zip((first, second), tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(type(o).__name__ for o in outcomes) == ["NotFound", "bytes"], outcomes
    with first.database.read() as conn:
        signed = [r for r in AuditLog.records(conn)
                  if r.event == "signature.pdf" and json.loads(r.detail)["document"] == pending.digest.hex()]
    assert len(signed) == 1
    assert files(spool) == [] and rows(first) == 0


def test_a_document_is_completed_only_by_the_application_that_prepared_it(nodes):
    (first, second), app, created, spool = nodes
    other, _ = first.applications.create("other-app", otp_required=False)
    pending = prepare(first, app, created)
    with pytest.raises(NotFound):
        second.pades.complete_pdf(other, pending.id, Secret("x" * 43), io.BytesIO())
    second.pades.complete_pdf(app, pending.id, authorize(first, app, created, pending.digest), io.BytesIO())


def test_the_spool_file_is_private_and_whole_and_the_row_holds_no_usable_id(nodes):
    (first, _), app, created, spool = nodes
    pending = prepare(first, app, created, PadesLevel.B_LT)
    [name] = files(spool)
    assert name.endswith(".pdf")  # renamed once whole: no partial file left
    assert stat.S_IMODE((spool / name).stat().st_mode) == 0o600
    with first.database.read() as conn:
        row = conn.execute(select(prepared_documents)).one()
    assert row.id_hash == document_hash(pending.id) and pending.id not in row.id_hash
    assert json.loads(row.post_sign)["validation_paths"]  # B-LT: the DSS data, as data
    first.pades.complete_pdf(app, pending.id, authorize(first, app, created, pending.digest), io.BytesIO())


def test_a_refused_preparation_leaves_nothing(nodes):
    (first, _), app, created, spool = nodes
    with pytest.raises(InvalidArgument):
        prepare(first, app, created, data=b"%PDF-1.7\nnot really\n")
    assert files(spool) == [] and rows(first) == 0


def test_expired_documents_are_removed_with_their_files(timed):
    (first, second), app, created, spool, clock = timed
    lifetime = first.signer.token_lifetime
    expiring = prepare(first, app, created)
    clock.advance(seconds=lifetime.total_seconds() - 1)
    assert second.pades.remove_expired_documents() == 0 and len(files(spool)) == 1
    clock.advance(seconds=1)
    assert second.pades.remove_expired_documents() == 1
    assert files(spool) == [] and rows(first) == 0
    with pytest.raises(NotFound):
        second.pades.complete_pdf(app, expiring.id, authorize(first, app, created, expiring.digest), io.BytesIO())


def test_an_expired_document_is_refused_and_removed_when_completed(timed):
    (first, second), app, created, spool, clock = timed
    pending = prepare(first, app, created)
    token = authorize(first, app, created, pending.digest)
    clock.advance(seconds=first.signer.token_lifetime.total_seconds())
    with pytest.raises(NotFound):
        second.pades.complete_pdf(app, pending.id, token, io.BytesIO())
    assert files(spool) == [] and rows(first) == 0


def test_a_file_whose_row_was_never_written_is_swept_once_no_completion_can_use_it(timed):
    """As a process that stopped between writing the file and its row leaves it."""
    (first, second), app, created, spool, clock = timed
    orphan = prepare(first, app, created)
    with first.database.transaction() as conn:
        conn.execute(delete(prepared_documents).where(prepared_documents.c.id_hash == document_hash(orphan.id)))
    clock.advance(seconds=(first.signer.token_lifetime + COMPLETION_GRACE).total_seconds() - 1)
    kept = prepare(first, app, created)
    second.pades.remove_expired_documents()
    assert len(files(spool)) == 2  # a completion may still be finishing it
    clock.advance(seconds=61)  # past the grace, and past the interval between two sweeps of files
    second.pades.remove_expired_documents()
    assert len(files(spool)) == 1 and rows(first) == 1
    second.pades.complete_pdf(app, kept.id, authorize(first, app, created, kept.digest), io.BytesIO())
    assert files(spool) == []


def test_an_application_keeps_a_bounded_number_of_prepared_documents(timed):
    (first, _), app, created, spool, clock = timed
    store = PreparedDocuments(first.database, clock, spool, first.signer.token_lifetime, max_per_application=2)
    signature = PreparedSignature(document_digest=bytes(32), reserved_region_start=10, reserved_region_end=20,
                                  md_algorithm="sha256", signing_time=clock.now(), post_sign=None)

    def write(file):
        file.write(b"%PDF-1.7\n")
        return signature

    added = []
    for _ in range(3):
        added.append(store.add(app.id, created.credential.id, bytes(32), PadesLevel.B_B, write))
        clock.advance(seconds=1)
    assert rows(first) == 2 and len(files(spool)) == 2
    with pytest.raises(NotFound):
        store.take(added[0].id, app.id)  # the oldest made room
    for pending in added[1:]:
        store.discard(store.take(pending.id, app.id))
    assert files(spool) == [] and rows(first) == 0
