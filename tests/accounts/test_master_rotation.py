"""Master key rotation: holders keep signing through it, packages move under the new key on their
next use and by the re-wrap pass, and the old key is destroyed only when no package needs it.

Rotations destroy master keys, so these tests run on a token of their own, never the shared one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import select

from signserver.accounts import otp
from signserver.accounts.master_rotation import MasterRotation
from signserver.accounts.packages import account_seal, insert_package
from signserver.audit.log import AuditLog
from signserver.clock import ManualClock
from signserver.errors import HsmUnavailable, KeyNotFound
from signserver.grpc_api.server import BackgroundWork
from signserver.hsm.admin import TokenAdministrator
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.service import SignService
from signserver.signing.hash_signer import MASTER_KEY_MISSING
from signserver.store.schema import master_keys, signing_packages
from tests import cli_forkserver
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, database_url, enrol
from tests.hsm.test_keystore import verify

ECDSA = SignatureAlgorithm.ECDSA_SHA256
SO_PIN = Secret("so-pin-for-rotation-tests")
USER_PIN = Secret("user-pin-for-rotation-tests")
GRACE = datetime.timedelta(seconds=60)


@pytest.fixture(scope="module")
def token(config) -> str:
    label = f"rotation-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(label, SO_PIN, USER_PIN)
    # The token stays: deleting it under this process's loaded SoftHSM would break other tokens'
    # key generation (see tests/hsm/test_ceremony.py).
    return label


def service_on(config, state: Path, token: str, clock) -> SignService:
    state.mkdir(parents=True, exist_ok=True)
    own = replace(config, state_dir=state, database_url=database_url(state / "signserver.db"),
                  hsm=replace(config.hsm, token_label=token))
    service = SignService.from_config(own, user_pin=USER_PIN, clock=clock)
    service.prepare_database()
    service.packages.ensure_master()  # as the server's first start does
    return service


@pytest.fixture
def service(config, token, tmp_path, clock):
    service = service_on(config, tmp_path / "state", token, clock)
    yield service
    service.close()


def rotation_of(service: SignService) -> MasterRotation:
    return MasterRotation(service.database, service.packages, service.master_keys, service.audit, service.clock)


class Holders:
    """Enrolled holders who authorise and sign through one application."""

    def __init__(self, service: SignService, clock: ManualClock):
        self.service, self.clock = service, clock
        self.app, _ = service.applications.create(f"app-{uuid.uuid4().hex[:6]}")

    def enrol(self):
        return enrol(self.service)

    def sign(self, holder, text: str = "contract") -> None:
        """Authorise and sign one digest; the signature must verify with the package's public key."""
        created, seed = holder
        self.clock.advance(seconds=30)  # a fresh OTP step: a code is accepted once
        digest = hashlib.sha256(text.encode()).digest()
        token = self.service.signer.authorize(self.app, created.account.username, Secret(PASSWORD),
                                              otp.code_at(seed, self.clock.now()), created.credential.id,
                                              HashAlgorithm.SHA256, [digest])
        [signature] = self.service.signer.sign_hashes(self.app, created.credential.id, Secret(token.token), ECDSA,
                                                      [digest])
        public = load_der_public_key(self.service.packages.public_key_der(created.credential.key_id))
        verify(public, signature, ECDSA, text.encode())


def master_of(service: SignService, holder) -> str:
    with service.database.read() as conn:
        return conn.execute(select(signing_packages.c.master_label)
                            .where(signing_packages.c.key_id == holder[0].credential.key_id)).scalar()


def states(service: SignService) -> dict[str, str]:
    with service.database.read() as conn:
        return dict(conn.execute(select(master_keys.c.label, master_keys.c.state)).all())


def master_cli(service: SignService, state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``signserver hsm master ARGS`` on the service's token and database."""
    env = {**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(service.config.state_dir),
           "SIGNSERVER_DATABASE_URL": service.database.url, "SIGNSERVER_HSM_USER_PIN": USER_PIN.reveal()}
    return cli_forkserver.run([str(SIGNSERVER), "hsm", "master", *args, "--token", service.keys.session.token_label],
                              env=env, capture_output=True, text=True, timeout=120)


def test_holders_sign_before_and_after_rotation_and_the_pass(service, clock):
    holders = Holders(service, clock)
    alice, bob, carol = holders.enrol(), holders.enrol(), holders.enrol()
    old = master_of(service, alice)
    holders.sign(alice)

    new = rotation_of(service).rotate("operator:test")

    assert new != old and states(service) == {old: "retiring", new: "active"}
    assert service.master_keys.present(new)
    holders.sign(alice)  # Authorize re-wrapped her package on its way
    assert master_of(service, alice) == new
    assert master_of(service, bob) == old  # untouched until used, or until the pass
    holders.sign(bob)
    assert master_of(service, bob) == new
    fresh = holders.enrol()
    assert master_of(service, fresh) == new  # new packages are wrapped by the active key

    seen = []
    counts = rotation_of(service).rewrap_pass(batch=1, progress=lambda done, total, rate: seen.append((done, total)))

    assert (counts.rewrapped, counts.failed, counts.remaining) == (1, 0, 0)
    assert seen == [(1, 1)]
    assert master_of(service, carol) == new
    holders.sign(carol)
    holders.sign(alice, "after the pass")


def test_the_pass_reports_progress_per_batch_and_is_idempotent(service, clock):
    holders = Holders(service, clock)
    enrolled = [holders.enrol() for _ in range(5)]
    rotation = rotation_of(service)
    new = rotation.rotate("operator:test")
    seen = []

    counts = rotation.rewrap_pass(batch=2, progress=lambda done, total, rate: seen.append((done, total)))

    assert [s for s in seen] == [(2, 5), (4, 5), (5, 5)]
    assert counts.rewrapped == 5 and counts.remaining == 0
    assert {master_of(service, h) for h in enrolled} == {new}
    assert rotation.rewrap_pass().rewrapped == 0
    holders.sign(enrolled[3])


def test_the_old_master_is_destroyed_only_when_no_package_names_it(service, clock):
    holders = Holders(service, clock)
    alice, bob = holders.enrol(), holders.enrol()
    old = master_of(service, alice)
    rotation = MasterRotation(service.database, service.packages, service.master_keys, service.audit, clock,
                              retire_grace=GRACE)
    new = rotation.rotate("operator:test")
    clock.advance(seconds=GRACE.total_seconds() + 1)
    holders.sign(alice)  # alice's package moves; bob's still names the old key

    assert rotation.retire_unused("operator:test") == []
    assert states(service)[old] == "retiring" and service.master_keys.present(old)

    rotation.rewrap_pass()
    assert rotation.retire_unused("operator:test") == [old]

    assert states(service) == {old: "retired", new: "active"}
    assert not service.master_keys.present(old)
    status = {m.label: m for m in rotation.status()}
    assert (status[old].state, status[old].packages, status[old].on_token) == ("retired", 0, "no")
    assert (status[new].state, status[new].packages, status[new].on_token) == ("active", 2, "yes")
    with service.database.read() as conn:
        events = [(r.event, r.subject) for r in AuditLog.records(conn) if r.event.startswith("master_key.")]
    assert events == [("master_key.rotated", new), ("master_key.retired", old)]
    holders.sign(bob)


def test_the_old_master_stays_through_the_grace_after_rotation(service, clock):
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)
    rotation = MasterRotation(service.database, service.packages, service.master_keys, service.audit, clock,
                              retire_grace=GRACE)
    rotation.rotate("operator:test")
    rotation.rewrap_pass()

    assert rotation.retire_unused("operator:test") == []  # a package begun under it may still be stored
    clock.advance(seconds=GRACE.total_seconds())
    assert rotation.retire_unused("operator:test") == [old]


def test_a_package_whose_master_is_gone_cannot_sign_and_keeps_its_master_named(service, clock):
    holders = Holders(service, clock)
    orphan, other = holders.enrol(), holders.enrol()
    old = master_of(service, orphan)
    rotation = rotation_of(service)
    rotation.rotate("operator:test")
    holders.sign(other)  # moved before the old key is lost
    service.master_keys.destroy(old)  # the key lost on this token (never copied here, or destroyed by hand)

    counts = rotation.rewrap_pass()

    assert (counts.rewrapped, counts.failed, counts.failed_key_ids) == (0, 1, [orphan[0].credential.key_id])
    assert counts.remaining == 1
    clock.advance(hours=1)
    assert rotation.retire_unused("operator:test") == []
    assert states(service)[old] == "retiring"
    # The caller hears that the server cannot sign now, nothing of master keys, tokens or the key
    # ceremony: those are the log's.
    with pytest.raises(HsmUnavailable) as refused:
        holders.sign(orphan)
    assert str(refused.value) == MASTER_KEY_MISSING
    holders.sign(other, "still signs")


def test_a_prepared_master_waits_until_activated(service, clock):
    holders = Holders(service, clock)
    rotation = rotation_of(service)
    old = master_of(service, holders.enrol())

    pending = rotation.rotate("operator:test", activate=False)

    assert states(service) == {old: "active", pending: "pending"}
    assert master_of(service, holders.enrol()) == old
    rotation.activate(pending, "operator:test")
    assert states(service) == {old: "retiring", pending: "active"}
    assert master_of(service, holders.enrol()) == pending


def test_a_master_this_token_lacks_is_not_activated(service, clock):
    rotation = rotation_of(service)
    pending = rotation.rotate("operator:test", activate=False)
    service.master_keys.destroy(pending)  # as on a token the ceremony has not reached yet

    with pytest.raises(KeyNotFound, match="key ceremony"):
        rotation.activate(pending, "operator:test")
    assert states(service)[pending] == "pending"


def test_the_background_rounds_rewrap_a_bounded_batch_each(service, clock):
    holders = Holders(service, clock)
    enrolled = [holders.enrol() for _ in range(3)]
    rotation = rotation_of(service)
    new = rotation.rotate("operator:test")

    first = rotation.background_round(limit=2)
    second = rotation.background_round(limit=2)

    assert (first.rewrapped, first.remaining) == (2, 1)
    assert (second.rewrapped, second.remaining) == (1, 0)
    assert {master_of(service, h) for h in enrolled} == {new}


def test_the_server_background_work_rewraps_and_retires(service, clock):
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)
    new = rotation_of(service).rotate("operator:test")
    clock.advance(minutes=5)  # past the grace
    work = BackgroundWork(service, poll_seconds=0.05)
    work.start()
    try:
        deadline = time.monotonic() + 60
        while states(service)[old] != "retired" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        work.stop()
    assert states(service) == {old: "retired", new: "active"}
    assert master_of(service, holder) == new
    assert not service.master_keys.present(old)
    holders.sign(holder)


def test_cli_rotates_rewraps_with_progress_and_retires(service, clock, state_dir, tmp_path):
    holders = Holders(service, clock)
    enrolled = [holders.enrol() for _ in range(3)]
    old = master_of(service, enrolled[0])

    rotated = master_cli(service, state_dir, "rotate", "--grace-seconds", "0", "--batch", "2")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped 3/3 packages (" in rotated.stderr and "re-wrapped 2/3 packages (" not in rotated.stderr
    assert f"retired and destroyed {old}" in rotated.stdout

    status = master_cli(service, state_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    masters = {m["label"]: m for m in json.loads(status.stdout)}
    new = next(label for label, m in masters.items() if m["state"] == "active")
    assert (masters[old]["state"], masters[old]["on_token"]) == ("retired", "no")
    assert (masters[new]["packages"], masters[new]["on_token"]) == (3, "yes")
    assert masters[new]["check_value"] == service.master_keys.describe(new).check_value
    service.keys.session.close()  # the CLI destroyed a key this session had found
    holders.sign(enrolled[1])


def test_cli_rotate_no_wait_leaves_the_packages_to_the_pass(service, clock, state_dir):
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)

    rotated = master_cli(service, state_dir, "rotate", "--no-wait", "--grace-seconds", "3600")

    assert rotated.returncode == 0, rotated.stderr
    assert master_of(service, holder) == old and states(service)[old] == "retiring"
    # The grace the rotation gave is shown: the old key goes not before it ends, whichever server retires it.
    status = master_cli(service, state_dir, "status", "--json")
    retiring = next(m for m in json.loads(status.stdout) if m["label"] == old)
    grace_end = datetime.datetime.fromisoformat(retiring["retire_after"])
    assert 3590 <= (grace_end - datetime.datetime.now(datetime.timezone.utc)).total_seconds() <= 3601
    table = master_cli(service, state_dir, "status")
    assert f"not before {grace_end.isoformat(timespec='seconds')}" in table.stdout
    rewrapped = master_cli(service, state_dir, "rewrap")
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert "re-wrapped 1/1 packages" in rewrapped.stderr
    assert master_of(service, holder) != old




def test_a_package_stored_while_its_master_key_is_retired_keeps_the_key(service, clock):
    """A package made under a master key that became retiring meanwhile (a rotation during an
    enrolment that stalled past the grace) and is being stored when the retirement runs: the
    retirement waits for the store to commit and then sees it, or the store waits and is refused;
    never a package under a master key destroyed."""
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)
    with service.database.read() as conn:
        seal_public = account_seal(conn, holder[0].account.id).seal_public_key
    made = service.packages.make(holder[0].account.username, seal_public, KeyAlgorithm.EC_P256)
    assert made["master_label"] == old
    rotation = MasterRotation(service.database, service.packages, service.master_keys, service.audit, clock,
                              retire_grace=GRACE)
    rotation.rotate("operator:test")
    rotation.rewrap_pass()  # the enrolled holder's package moves: nothing stored names the old key
    clock.advance(seconds=GRACE.total_seconds() + 1)
    retired, waited = [], []
    retirement = threading.Thread(target=lambda: retired.append(rotation.retire_unused("operator:test")))

    with service.database.transaction() as conn:
        insert_package(conn, made)
        retirement.start()
        retirement.join(timeout=1.0)
        waited.append(retirement.is_alive())
    retirement.join(timeout=60)

    assert waited == [True] and retired == [[]]
    assert states(service)[old] == "retiring" and service.master_keys.present(old)
    rotation.rewrap_pass()  # the late package moves too; then the old key goes
    assert rotation.retire_unused("operator:test") == [old]
