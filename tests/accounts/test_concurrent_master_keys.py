"""Master keys made by several processes at once on one token and one database: rotations, and the
first key a server's first start (or the first account) makes. They take turns from choosing a
label to recording the key, so the token never holds two keys under one label (of which a lookup
would find either), and the database records every key the token holds, with its check value.

Each test has tokens of its own: what is on them is what the test made. The processes are real
ones (spawned, or `signserver` commands), each with its own token session and database connections.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from signserver.accounts import master_rotation
from signserver.accounts.master_rotation import MasterRotation, creating_master_key
from signserver.errors import SignServerError, StoreUnavailable
from signserver.hsm.admin import TokenAdministrator
from signserver.hsm.master_keys import master_label, master_number
from signserver.secret import Secret
from signserver.service import SignService
from signserver.store.schema import master_keys
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, database_url

SO_PIN = Secret("so-pin-for-concurrent-master-tests")
USER_PIN = Secret("user-pin-for-concurrent-master-tests")
BARRIER_WAIT = 120  # seconds a process waits for the others of its round (starting one takes a second or two)

_spawn = multiprocessing.get_context("spawn")


@pytest.fixture
def new_token(config):
    """Makes a token of the test's own. They stay: deleting one under this process's loaded SoftHSM
    would break other tokens' key generation (see tests/hsm/test_ceremony.py)."""
    def make() -> str:
        label = f"concurrent-{uuid.uuid4().hex[:8]}"
        TokenAdministrator(config.hsm.module).init_token(label, SO_PIN, USER_PIN)
        return label
    return make


def own_config(config, token: str, db: Path):
    return replace(config, database_url=database_url(db / "signserver.db"), hsm=replace(config.hsm, token_label=token))


def with_first_master(config) -> None:
    """The first master key, as the server's first start makes it."""
    service = SignService.from_config(config, user_pin=USER_PIN)
    try:
        service.packages.ensure_master()
    finally:
        service.close()


def _maker(configs: list, actions: list[str], barrier, results) -> None:
    """Another process, with token sessions and database connections of its own. Round by round,
    on that round's configuration, it does ``actions[round]``: "rotate" (MasterRotation.rotate, as
    `signserver hsm master rotate --no-wait`) or "first" (SigningPackages.ensure_master, as a
    server's start: the first master key on a database that has none). Every process of a round
    sets out at once, and puts (round, action, label, None) or (round, action, None, error)."""
    service = None
    try:
        for number, (config, action) in enumerate(zip(configs, actions)):
            barrier.wait(BARRIER_WAIT)  # the previous round is over: nobody logs in beside a key being made
            if service is None or service.config.database_url != config.database_url:
                if service is not None:
                    service.close()
                service = SignService.from_config(config, user_pin=USER_PIN)
            barrier.wait(BARRIER_WAIT)
            try:
                if action == "rotate":
                    label = MasterRotation(service.database, service.packages, service.master_keys, service.audit,
                                           service.clock).rotate(f"operator:process-{os.getpid()}")
                else:
                    label = service.packages.ensure_master().label
                results.put((number, action, label, None))
            except SignServerError as exc:
                results.put((number, action, None, f"{type(exc).__name__}: {exc}"))
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        raise
    finally:
        if service is not None:
            service.close()


def run_makers(plans: list[tuple[list, list[str]]]) -> list[tuple[int, str, str | None, str | None]]:
    """One spawned process per (configs, actions) of ``plans``, their rounds together; what they did."""
    barrier = _spawn.Barrier(len(plans))
    results = _spawn.Queue()
    processes = [_spawn.Process(target=_maker, args=(configs, actions, barrier, results), daemon=True)
                 for configs, actions in plans]
    for process in processes:
        process.start()
    rounds = sum(len(actions) for _, actions in plans)
    try:
        done = [results.get(timeout=300) for _ in range(rounds)]
    finally:
        for process in processes:
            process.join(60)
            if process.is_alive():
                process.kill()
                process.join()
    assert [process.exitcode for process in processes] == [0] * len(plans)
    return sorted(done, key=lambda result: result[:2])


def master_keys_of(config) -> tuple[list[tuple[str, str]], dict[str, tuple[str, str]]]:
    """The master keys on the token as (label, check value), every one (two of one label are two),
    and those the database records: label -> (check value, state)."""
    service = SignService.from_config(config, user_pin=USER_PIN)  # a session of its own, opened now
    try:
        on_token = [(info.label, info.check_value) for info in service.master_keys.on_token()]
        with service.database.read() as conn:
            recorded = {row.label: (row.check_value, row.state) for row in conn.execute(select(master_keys))}
    finally:
        service.close()
    return on_token, recorded


def assert_one_key_per_label(config) -> dict[str, tuple[str, str]]:
    """The token holds one key per label, every one of them recorded with its check value, and no
    recorded key is missing from it (no process here stopped between making and recording a key,
    nor retired one). Returns the records."""
    on_token, recorded = master_keys_of(config)
    labels = [label for label, _ in on_token]
    assert len(labels) == len(set(labels)), f"two keys under one label on the token: {on_token}"
    assert {label: check_value for label, (check_value, _) in recorded.items()} == dict(on_token), (on_token, recorded)
    assert [state for _, state in recorded.values()].count("active") == 1, recorded
    return recorded


def test_two_processes_rotating_at_once_make_one_key_per_label(config, new_token, tmp_path):
    own = own_config(config, new_token(), tmp_path)
    with_first_master(own)
    rounds = 4

    done = run_makers([([own] * rounds, ["rotate"] * rounds)] * 2)

    assert [error for *_, error in done] == [None] * 2 * rounds, done
    made = [label for _, _, label, _ in done]
    assert sorted(made, key=master_number) == [master_label(n) for n in range(2, 2 * rounds + 2)]
    recorded = assert_one_key_per_label(own)
    # One after the other, each rotation replaced the active key of the one before it.
    assert {label: state for label, (_, state) in recorded.items()} == {
        **{master_label(n): "retiring" for n in range(1, 2 * rounds + 1)}, master_label(2 * rounds + 1): "active"}


def test_first_starts_and_a_rotation_at_once_make_one_first_key(config, new_token, tmp_path):
    """Two processes finding a new database without a master key (two nodes' first start, or the
    first accounts) and a rotation beside them, on a new token each round."""
    configs = [own_config(config, new_token(), tmp_path / f"round-{n}") for n in range(3)]

    done = run_makers([(configs, ["first"] * 3), (configs, ["first"] * 3), (configs, ["rotate"] * 3)])

    for number, own in enumerate(configs):
        recorded = assert_one_key_per_label(own)
        of_round = [(action, label, error) for round_, action, label, error in done if round_ == number]
        firsts = [label for action, label, error in of_round if action == "first" and error is None]
        [(rotated, error)] = [(label, error) for action, label, error in of_round if action == "rotate"]
        assert len(firsts) == 2, of_round
        if rotated is None:  # its turn came before the first key's: nothing to rotate
            assert error.startswith("NotFound") and "no master key yet" in error, error
            assert {label: state for label, (_, state) in recorded.items()} == {master_label(1): "active"}
            assert firsts == [master_label(1)] * 2
        else:
            assert {label: state for label, (_, state) in recorded.items()} == {
                master_label(1): "retiring", master_label(2): "active"}, of_round
            assert rotated == master_label(2), of_round
            # The start that made the first key says so; the other found it, or found it replaced.
            assert master_label(1) in firsts and set(firsts) <= {master_label(1), master_label(2)}, of_round


# --- the command ----------------------------------------------------------------------------


def master_command(state_dir, own, token: str, *args: str):
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=own.database_url, SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal())
    return cli_forkserver.run([str(SIGNSERVER), "hsm", "master", *args, "--token", token], capture_output=True,
                              text=True, timeout=180, env=env)


def test_two_rotate_commands_at_once_make_one_key_per_label(config, state_dir, new_token, tmp_path):
    """As `for i in 1 2 3; do signserver hsm master rotate --no-wait & signserver hsm master rotate
    --no-wait; wait; done` ran: once two made the same label, the commands after them refused the
    token ("not the one the database knows")."""
    token = new_token()
    own = own_config(config, token, tmp_path)
    with_first_master(own)

    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            for rotated in list(pool.map(lambda _: master_command(state_dir, own, token, "rotate", "--no-wait"),
                                         range(2))):
                assert rotated.returncode == 0, rotated.stderr

    shown = master_command(state_dir, own, token, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert [m["label"] for m in listed] == [master_label(n) for n in range(1, 8)], listed
    assert {(m["state"], m["on_token"]) for m in listed[:-1]} == {("retiring", "yes")}, listed
    assert (listed[-1]["state"], listed[-1]["on_token"]) == ("active", "yes"), listed
    assert_one_key_per_label(own)


def token_object_files(state_dir) -> int:
    """How many objects SoftHSM keeps on its tokens, counted in its directory: without logging in
    beside a command that makes a key."""
    return sum(1 for _ in (Path(state_dir) / "softhsm" / "tokens").glob("*/*.object"))


def test_a_rotation_makes_its_key_only_once_another_maker_has_recorded(config, state_dir, new_token, tmp_path):
    """While another process holds its turn at making a master key, a rotation makes none: it waits,
    then takes the next label."""
    token = new_token()
    own = own_config(config, token, tmp_path)
    with_first_master(own)
    service = SignService.from_config(own, user_pin=USER_PIN)
    try:
        with ThreadPoolExecutor(1) as pool:
            with creating_master_key(service.database):
                files = token_object_files(state_dir)
                rotating = pool.submit(master_command, state_dir, own, token, "rotate", "--no-wait")
                time.sleep(4)  # the command starts, opens the token and the database, and waits its turn
                assert not rotating.done(), rotating.result().stderr
                assert token_object_files(state_dir) == files  # no key made while another has its turn
            rotated = rotating.result(120)
    finally:
        service.close()
    assert rotated.returncode == 0, rotated.stderr
    recorded = assert_one_key_per_label(own)
    assert {label: state for label, (_, state) in recorded.items()} == {
        master_label(1): "retiring", master_label(2): "active"}


def test_a_rotation_that_waits_too_long_for_its_turn_stops_having_made_nothing(config, new_token, tmp_path,
                                                                             monkeypatch):
    own = own_config(config, new_token(), tmp_path)
    with_first_master(own)
    monkeypatch.setattr(master_rotation, "CREATION_WAIT_SECONDS", 0.5)
    service = SignService.from_config(own, user_pin=USER_PIN)
    try:
        rotation = MasterRotation(service.database, service.packages, service.master_keys, service.audit,
                                  service.clock)
        with ThreadPoolExecutor(1) as pool, creating_master_key(service.database):  # another maker's turn
            waiting = pool.submit(rotation.rotate, "operator:test")
            with pytest.raises(StoreUnavailable, match="another process has been making a master key"):
                waiting.result(60)
    finally:
        service.close()
    on_token, recorded = master_keys_of(own)
    assert on_token == [(master_label(1), recorded[master_label(1)][0])] and list(recorded) == [master_label(1)]
