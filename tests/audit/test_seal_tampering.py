"""Seals an insider with write access to the database can neither remove nor forge.

Each attack is carried out against a real database and token, as someone who can write every
table (and knows how the record chain is computed) but cannot use the HSM's seal key.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select, update

from signserver.accounts import otp
from signserver.audit.log import GENESIS_HASH, record_hash
from signserver.audit.seal import AuditSealer, SERVER_STARTED, SERVER_STOPPED, audit_key_id
from signserver.audit.seal_format import LEGACY_FORMAT, SealContent, signature_is_valid
from signserver.audit.seal_key import SealKeyPin, fingerprint
from signserver.audit.verify import verify_audit_log
from signserver.errors import ConfigurationError, UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.store.schema import audit_head, audit_log, audit_seals
from tests import cli_forkserver
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, enrol


def report(service, pin: SealKeyPin | None = None, expected_key: str | None = None):
    sealer = service.sealer
    return verify_audit_log(service.database, pin or sealer.pin, service.clock.now(), sealer.max_seal_age,
                            expected_key=expected_key)


def past_the_allowance(service) -> None:
    service.clock.advance(seconds=service.sealer.max_seal_age.total_seconds() + 1)


def append(service, n: int) -> None:
    with service.database.transaction() as conn:
        service.audit.append(conn, service.clock.now(), "test.event", "tester", "x", n=n)


@pytest.fixture
def sealed_history(fresh_service):
    """A log sealed three times as it grew, a minute apart: records 1 to 6, seals at 2, 4 and 6."""
    enrol(fresh_service)
    fresh_service.sealer.seal()
    for n in range(4):
        fresh_service.clock.advance(seconds=60)
        append(fresh_service, n)
        if n % 2:
            fresh_service.sealer.seal()
    return fresh_service


def seal_rows(service):
    with service.database.read() as conn:
        return conn.execute(select(audit_seals).order_by(audit_seals.c.number)).all()


# --- a clean log -------------------------------------------------------------------------------

def test_clean_sealed_log_is_intact_long_after(sealed_history):
    past_the_allowance(sealed_history)
    result = report(sealed_history)
    assert result.intact, result.problems
    assert (result.records, result.seals, result.sealed_seq) == (6, 3, 6)
    token_key = sealed_history.keys.public_key(audit_key_id(sealed_history.keys))
    assert result.seal_key == fingerprint(token_key)


def test_seals_are_chained(sealed_history):
    rows = seal_rows(sealed_history)
    assert [r.number for r in rows] == [1, 2, 3]
    assert [r.prev_seal for r in rows[1:]] == [SealContent.of_row(r).digest() for r in rows[:-1]]


# --- attack 1: rewrite records, recompute the chain, delete every seal --------------------------

def rewrite_record(service, seq: int, **changes) -> None:
    """Change a record and recompute every hash after it, and the head, as the code would."""
    with service.database.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(**changes))
        prev = GENESIS_HASH
        for r in conn.execute(select(audit_log).order_by(audit_log.c.seq)).all():
            digest = record_hash(prev, r.seq, r.at, r.event, r.actor, r.subject, r.detail)
            conn.execute(update(audit_log).where(audit_log.c.seq == r.seq).values(prev_hash=prev, hash=digest))
            prev = digest
        conn.execute(update(audit_head).values(hash=prev))


def test_rewritten_log_without_any_seal_is_reported(sealed_history):
    rewrite_record(sealed_history, 1, actor="operator:nobody")
    with sealed_history.database.transaction() as conn:
        conn.execute(delete(audit_seals))
    past_the_allowance(sealed_history)
    result = report(sealed_history)
    assert not result.intact
    assert any(p.startswith("no seal covers the log") for p in result.problems), result.problems


# --- attack 2: keep only the oldest seal --------------------------------------------------------

def test_only_the_oldest_seal_kept_is_reported(sealed_history):
    with sealed_history.database.transaction() as conn:
        conn.execute(delete(audit_seals).where(audit_seals.c.number > 1))
    past_the_allowance(sealed_history)
    result = report(sealed_history)
    assert not result.intact
    assert any(p.startswith("records from 3 on") and "went unsealed" in p for p in result.problems), result.problems


def test_a_seal_removed_from_the_middle_breaks_the_chain(sealed_history):
    with sealed_history.database.transaction() as conn:
        conn.execute(delete(audit_seals).where(audit_seals.c.number == 2))
    problems = report(sealed_history).problems
    assert "seals 2 to 2 are missing: removed from the seal chain" in problems
    assert any(p.startswith("seal 3 does not follow") for p in problems)


# --- stale seals while the server runs: the heartbeat -------------------------------------------

def heartbeats(service, count: int) -> None:
    for _ in range(count):
        service.clock.advance(seconds=60)
        assert service.sealer.seal_if_due() is not None  # sealed although no record was added


def test_removed_heartbeats_leave_a_stale_newest_seal(fresh_service):
    enrol(fresh_service)
    fresh_service.sealer.server_started()
    heartbeats(fresh_service, 10)  # ten minutes: more than the allowance
    assert report(fresh_service).intact
    with fresh_service.database.transaction() as conn:
        conn.execute(delete(audit_seals).where(audit_seals.c.number > 1))  # the last ones, no chain gap
    result = report(fresh_service)
    assert result.server_running and not result.intact
    assert any(p.startswith("the newest seal") and "server running" in p for p in result.problems), result.problems


def test_a_clean_stop_needs_no_heartbeat(fresh_service):
    enrol(fresh_service)
    fresh_service.sealer.server_started()
    heartbeats(fresh_service, 2)
    fresh_service.sealer.server_stopping()
    fresh_service.clock.advance(days=3)
    result = report(fresh_service)
    assert result.intact and not result.server_running, result.problems
    with fresh_service.database.read() as conn:
        events = [r.event for r in conn.execute(select(audit_log.c.event).order_by(audit_log.c.seq))]
    assert events[-1] == SERVER_STOPPED and SERVER_STARTED in events


def test_an_unsealed_stop_record_does_not_excuse_a_stale_seal(fresh_service):
    enrol(fresh_service)
    fresh_service.sealer.server_started()
    heartbeats(fresh_service, 10)
    with fresh_service.database.transaction() as conn:
        conn.execute(delete(audit_seals).where(audit_seals.c.number > 1))
        fresh_service.audit.append(conn, fresh_service.clock.now(), SERVER_STOPPED, "server", "forged", pid=1)
    assert any(p.startswith("the newest seal") for p in report(fresh_service).problems)


def test_the_server_records_its_start_and_stop(fresh_service, config):
    from tests.grpc_api.conftest import ServerThread

    with ServerThread(config, fresh_service):
        pass
    result = report(fresh_service)
    assert result.intact and not result.server_running, result.problems
    with fresh_service.database.read() as conn:
        events = [r.event for r in conn.execute(select(audit_log.c.event).order_by(audit_log.c.seq))]
    assert events[0] == SERVER_STARTED and events[-1] == SERVER_STOPPED
    assert result.sealed_seq == result.last_seq


# --- attack 3: a seal made by a holder's key through SignHash -----------------------------------

def holder_signature(service, message: bytes) -> tuple[str, bytes]:
    """A P-256 holder's ECDSA signature over ``message``, made the ordinary way (Authorize +
    SignHash); returns the holder key's id and the signature."""
    created, seed = enrol(service)
    app, _ = service.applications.create(f"app-{created.account.username}")
    digest = hashlib.sha256(message).digest()
    code = otp.code_at(seed, service.clock.now())
    credential = created.credential
    token = service.signer.authorize(app, created.account.username, Secret(PASSWORD), code, credential.id,
                                     HashAlgorithm.SHA256, [digest])
    [signature] = service.signer.sign_hashes(app, credential.id, Secret(token.token),
                                             SignatureAlgorithm.ECDSA_SHA256, [digest])
    public = load_der_public_key(service.packages.public_key_der(credential.key_id))
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    return credential.key_id, signature


@pytest.mark.parametrize("seal_format", ["legacy", "chained"])
def test_a_seal_signed_by_a_holder_key_is_refused(sealed_history, seal_format):
    first = seal_rows(sealed_history)[0]
    forged = SealContent.of_row(first)
    if seal_format == "legacy":
        forged = SealContent(number=1, seq=first.seq, hash=first.hash, at=first.at, format=LEGACY_FORMAT, prev_seal="")
    key_id, signature = holder_signature(sealed_history, forged.message())
    with sealed_history.database.transaction() as conn:
        conn.execute(update(audit_seals).where(audit_seals.c.number == 1).values(
            key_id=key_id, signature=signature, format=forged.format, prev_seal=forged.prev_seal))
    problems = report(sealed_history).problems
    assert any(p.startswith("the seal 1 at record 2 does not verify with the pinned seal key") for p in problems)


def test_the_seal_key_signs_whole_messages_only(fresh_service):
    """Even a credential pointed at the seal key could not have SignHash make a seal: the seal key
    is Ed25519, which signs whole messages, and SignHash signs digests only."""
    assert fresh_service.keys.get(audit_key_id(fresh_service.keys)).algorithm is KeyAlgorithm.ED25519
    with pytest.raises(UnsupportedAlgorithm):
        fresh_service.signer.sign_hashes(None, "any", Secret("x"), SignatureAlgorithm.ED25519, [bytes(32)])


# --- the pinned key -----------------------------------------------------------------------------

def test_missing_pin_with_seals_is_reported(sealed_history, tmp_path):
    result = report(sealed_history, pin=SealKeyPin(tmp_path / "nowhere" / "seal-key.pem"))
    assert result.seal_key is None
    assert any(p.startswith("no seal key is pinned at") for p in result.problems), result.problems


def test_expected_key_must_match(sealed_history):
    right = report(sealed_history).seal_key
    assert report(sealed_history, expected_key=right.upper()).intact
    wrong = report(sealed_history, expected_key="00" * 32)
    assert any("not the expected key" in p for p in wrong.problems)


def test_a_pin_is_never_overwritten(fresh_service, tmp_path):
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "audit" / "seal-key.pem"
    path.parent.mkdir()
    path.write_bytes(other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    before = path.read_bytes()
    sealer = AuditSealer(fresh_service.database, fresh_service.keys, fresh_service.audit, fresh_service.clock,
                         100, 60, SealKeyPin(path))
    enrol(fresh_service)
    with pytest.raises(ConfigurationError, match="is not the key pinned"):
        sealer.seal()
    assert path.read_bytes() == before
    assert seal_rows(fresh_service) == []


def test_first_seal_pins_the_token_key(fresh_service, tmp_path):
    path = tmp_path / "state" / "audit" / "seal-key.pem"
    sealer = AuditSealer(fresh_service.database, fresh_service.keys, fresh_service.audit, fresh_service.clock,
                         100, 60, SealKeyPin(path))
    enrol(fresh_service)
    sealer.seal()
    token_key = fresh_service.keys.public_key(audit_key_id(fresh_service.keys))
    assert SealKeyPin(path).load().fingerprint == fingerprint(token_key)
    assert fingerprint(token_key).encode() in path.read_bytes()  # readable by people, beside the PEM
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_an_ecdsa_seal_key_of_an_earlier_version_still_verifies():
    key = ec.generate_private_key(ec.SECP256R1())
    content = SealContent(number=4, seq=9, hash="ab" * 32, at=1_800_000_000, prev_seal="cd" * 32)
    signature = key.sign(content.message(), ec.ECDSA(hashes.SHA256()))
    assert signature_is_valid(key.public_key(), signature, content)
    moved = SealContent(number=5, seq=9, hash="ab" * 32, at=1_800_000_000, prev_seal="cd" * 32)
    assert not signature_is_valid(key.public_key(), signature, moved)


# --- the command --------------------------------------------------------------------------------

def test_audit_verify_expect_key(sealed_history, state_dir):
    sealed_history.sealer.seal()
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=sealed_history.database.url)
    ok = cli_forkserver.run([str(SIGNSERVER), "audit", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    key = report(sealed_history).seal_key
    assert key in ok.stdout
    right = cli_forkserver.run([str(SIGNSERVER), "audit", "verify", "--expect-key", key], env=env, capture_output=True,
                               text=True)
    assert right.returncode == 0, right.stdout
    wrong = cli_forkserver.run([str(SIGNSERVER), "audit", "verify", "--expect-key", "00" * 32], env=env,
                               capture_output=True, text=True)
    assert wrong.returncode == 1 and "TAMPERED" in wrong.stdout and "not the expected key" in wrong.stdout


# --- seals made before the chain ----------------------------------------------------------------

def test_seals_from_before_the_upgrade_still_verify(fresh_service, tmp_path):
    """A database at revision 0005 with a seal in the old form is upgraded: the old seal verifies
    with the pinned key, and the next seal is chained to it."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import text

    from signserver.store.database import MIGRATIONS, Database

    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    migrations = AlembicConfig()
    migrations.set_main_option("script_location", str(MIGRATIONS))
    with database.transaction() as conn:
        migrations.attributes["connection"] = conn
        command.upgrade(migrations, "0005")
        for n in range(3):
            fresh_service.audit.append(conn, fresh_service.clock.now(), "test.event", "tester", "x", n=n)
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    key_id = audit_key_id(fresh_service.keys)
    old = SealContent(number=0, seq=head.seq, hash=head.hash, at=0, format=LEGACY_FORMAT, prev_seal="")
    signature = fresh_service.keys.sign_data(key_id, old.message(), SignatureAlgorithm.ED25519)
    with database.transaction() as conn:
        conn.execute(text("INSERT INTO audit_seals (seq, hash, at, key_id, signature) VALUES (:s, :h, :a, :k, :g)"),
                     {"s": head.seq, "h": head.hash, "a": int(fresh_service.clock.now().timestamp()), "k": key_id,
                      "g": signature})
    database.migrate()
    sealer = AuditSealer(database, fresh_service.keys, fresh_service.audit, fresh_service.clock, 100, 60,
                         fresh_service.sealer.pin)

    def verified():
        return verify_audit_log(database, sealer.pin, fresh_service.clock.now(), sealer.max_seal_age)

    result = verified()
    assert result.intact and (result.seals, result.legacy_seals, result.sealed_seq) == (1, 1, 3), result.problems
    with database.transaction() as conn:
        fresh_service.audit.append(conn, fresh_service.clock.now(), "test.event", "tester", "x", n=4)
    assert sealer.seal() == 4
    with database.read() as conn:
        rows = conn.execute(select(audit_seals).order_by(audit_seals.c.number)).all()
    assert [r.number for r in rows] == [1, 2] and rows[1].prev_seal == SealContent.of_row(rows[0]).digest()
    assert verified().intact
