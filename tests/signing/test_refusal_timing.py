"""Refusals of Authorize take the same time whether the account exists or not: an unknown name, a
wrong password and a credential the account does not hold do the same work (argon2, the HSM's
unsealing of an OTP seed, the same transactions). In process, on a fresh database, interleaved."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import random
import statistics
import time

import pytest

from signserver.accounts import otp
from signserver.errors import AuthenticationFailed
from signserver.hsm.algorithms import HashAlgorithm
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol, production_costs, service_with

TRIES = 30
WARM_UP = 5
MARGIN_SECONDS = 0.0005  # medians within 0.5 ms
# More rounds while the medians are out of the margin: noise shrinks, a real gap stays. Where an
# argon2id evaluation takes 40-47 ms, the paired median of two identical evaluations still moved
# by up to 0.36 ms after 150 rounds (measured): up to 360 rounds.
BLOCKS = 12
STALL_SECONDS = 0.005  # off the CPU this long in a round: the round says nothing
MAX_ROUNDS_PER_TRY = 5


@pytest.fixture
def timed(config, tmp_path, clock):
    # The lock would end the comparison after five tries: its threshold is out of the way here
    # (that refusals count toward it is tested elsewhere).
    config = production_costs(config)  # the evaluation an unknown name costs is what is compared
    accounts = dataclasses.replace(config.accounts, lock_threshold=10_000)
    service = service_with(config, tmp_path / "signserver.db", clock, accounts=accounts)
    alice, bob = enrol(service), enrol(service)
    app, _ = service.applications.create("timing-app")
    return service, app, alice, bob


def refusal_time(attempt) -> tuple[float, float]:
    """The wall-clock time a refusal took, and how much of it the process was off the CPU."""
    wall, cpu = time.perf_counter(), time.thread_time()
    with pytest.raises(AuthenticationFailed):
        attempt()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return wall, wall - cpu


def add_rounds(attempts: dict, tries: int, gaps: dict[str, list[float]]) -> None:
    """Add ``tries`` rounds to ``gaps``: for each kind of attempt but the first, its wall-clock
    time minus the first kind's in the same round.

    Every round runs every kind once, in a random order, so a load that comes and goes weighs on
    all kinds alike and cancels out; a round in which the process was kept off the CPU for far
    longer than the margin (other work on a loaded machine) is run again, a few times at most.
    """
    reference, *others = attempts
    for _ in range(WARM_UP):
        for attempt in attempts.values():
            refusal_time(attempt)
    gc.collect()
    gc.disable()
    try:
        wanted = len(gaps[others[0]]) + tries
        for _ in range(tries * MAX_ROUNDS_PER_TRY):
            took = {kind: refusal_time(attempts[kind]) for kind in random.sample(list(attempts), len(attempts))}
            if max(off_cpu for _, off_cpu in took.values()) > STALL_SECONDS:
                continue
            for kind in others:
                gaps[kind].append(took[kind][0] - took[reference][0])
            if len(gaps[others[0]]) == wanted:
                break
    finally:
        gc.enable()


def medians(gaps: dict[str, list[float]]) -> dict[str, float]:
    return {kind: statistics.median(values) if values else float("inf") for kind, values in gaps.items()}


@pytest.mark.alone  # medians a fraction of a millisecond apart: other test processes on the cores blur them
def test_refusals_take_the_same_time_whether_the_account_exists_or_not(timed, clock):
    service, app, (alice, alice_seed), (bob, _) = timed
    name, digest = alice.account.username, [hashlib.sha256(b"timing").digest()]

    def authorize(username, password, code, credential_id):
        return lambda: service.signer.authorize(app, username, Secret(password), code, credential_id,
                                                HashAlgorithm.SHA256, digest)

    attempts = {
        "unknown account": authorize("nobody-has-this-name", PASSWORD, "123456", alice.credential.id),
        "wrong password": authorize(name, "Wrong-password-1", "123456", alice.credential.id),
        # Right factors, another holder's credential (the code is spent on the first try; the
        # later ones replay it, which the same statement refuses).
        "credential not held": authorize(name, PASSWORD, otp.code_at(alice_seed, clock.now()), bob.credential.id),
    }
    # The medians are taken over every round so far: on a loaded machine 30 rounds may leave a
    # median a millisecond off either way, which more rounds average out, while a path that does
    # more work keeps its gap however many rounds are added.
    gaps: dict[str, list[float]] = {kind: [] for kind in list(attempts)[1:]}
    seen = []
    for _ in range(BLOCKS):
        add_rounds(attempts, TRIES, gaps)
        rounds, now = min(len(values) for values in gaps.values()), medians(gaps)
        seen.append(f"{rounds} rounds: " + ", ".join(f"{kind} {gap * 1000:+.2f} ms" for kind, gap in now.items()))
        if all(abs(gap) < MARGIN_SECONDS for gap in now.values()):
            return
    pytest.fail("against an unknown account, the median gaps exceed 0.5 ms: " + "; ".join(seen))
