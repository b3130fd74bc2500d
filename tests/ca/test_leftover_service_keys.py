"""The OCSP responder's and TSA's keys that renewals made before superseded keys were recorded left
on the token: the background work finds them once, by their public keys in the certificates this
CA issued, and removes them like any superseded key, while another CA's keys on the same token,
labelled alike, stay."""

from __future__ import annotations

import datetime
import logging

from sqlalchemy import text

from signserver.ca import repository as repo
from signserver.ca.authority import OCSP, SUPERSEDED_KEY_GRACE, TSA
from signserver.ca.leftover_keys import LeftoverServiceKeys
from signserver.clock import ManualClock
from tests.ca.conftest import own_ca
from tests.ca.test_service_key_removal import (
    RENEWAL_DUE,
    _any_ocsp_request,
    check_ocsp,
    check_time_stamp,
    on_token,
    service_keys,
    token_objects,
    tsa_query,
    wait_for,
)
from tests.conftest import service_with


def renew_as_before(service, role: str) -> str:
    """A renewal as the versions before superseded_ca_keys made it: the new key and certificate
    committed, the old key left on the token with nothing naming it. Returns the old key's id."""
    old = service_keys(service)[role]
    service.ca.renew_service_key(role, "ca")
    with service.database.transaction() as conn:
        conn.execute(text("DELETE FROM superseded_ca_keys WHERE key_id = :key_id"), {"key_id": old})
    return old


def relabel(service, key_id: str, label: str) -> None:
    """Label the key pair ``key_id`` as ``label`` on the token."""
    from pkcs11 import Attribute

    def change(session) -> None:
        for found in session.get_objects({Attribute.ID: bytes.fromhex(key_id)}):
            found[Attribute.LABEL] = label

    service.keys.session.run(change, "relabel a key")


def superseded(service) -> dict[str, str]:
    with service.database.read() as conn:
        return {key.key_id: key.role for key in repo.superseded_keys(conn)}


def test_keys_left_by_earlier_renewals_leave_the_token_and_another_cas_keys_stay(config, tmp_path, caplog):
    from signserver.grpc_api.server import BackgroundWork

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "leftovers.db", clock)
    other = own_ca(config, tmp_path / "another-ca.db", clock)  # the same token, its keys labelled alike
    service.sealer.seal_if_due()  # as a running server has: the audit seal's key is made at the first seal
    clock.advance(seconds=RENEWAL_DUE.total_seconds())
    left = {renew_as_before(service, OCSP): OCSP, renew_as_before(service, TSA): TSA}
    left[renew_as_before(service, OCSP)] = OCSP  # renewed twice: two keys of one role left
    others = {renew_as_before(other, TSA), *service_keys(other).values()}
    assert all(on_token(service, key_id) for key_id in (*left, *others))
    current = service_keys(service)
    before = token_objects(service)

    work = BackgroundWork(service, poll_seconds=0.05)
    with caplog.at_level(logging.INFO, logger="signserver.ca"):
        work.start()
        try:
            wait_for(lambda: superseded(service) == left, "the leftovers to be recorded")
            # Recorded as superseded now: they stay for the grace, as a renewal's old key would.
            assert all(on_token(service, key_id) for key_id in left)
            clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
            wait_for(lambda: not any(on_token(service, key_id) for key_id in left), "the leftovers' removal")
            wait_for(lambda: superseded(service) == {}, "the leftovers to be forgotten")
        finally:
            work.stop()
    assert token_objects(service) == before - 2 * len(left)  # each a private and a public key
    found = " ".join(record.getMessage() for record in caplog.records if record.name == "signserver.ca.leftover_keys")
    assert all(key_id in found for key_id in left) and "left on the token by a renewal" in found
    # Nothing else was touched: this CA's keys in use, the other CA's keys, used or left.
    assert service_keys(service) == current
    assert all(on_token(service, key_id) for key_id in (*current.values(), *others))
    check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now())
    check_time_stamp(service, service.pades.tsa.respond(tsa_query().dump()), clock.now(), tmp_path)
    check_ocsp(other.ca.ocsp(_any_ocsp_request(other)), clock.now())


def test_the_token_is_searched_for_leftovers_once_per_start(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "once.db", clock)
    first = renew_as_before(service, OCSP)
    assert service.ca.renew_service_keys_if_due() == []
    assert superseded(service) == {first: OCSP}
    # A key left after that pass is not searched for again by this process...
    second = renew_as_before(service, TSA)
    assert service.ca.renew_service_keys_if_due() == []
    assert superseded(service) == {first: OCSP}
    # ...but by the next start's, under the label of today's versions as under the earlier one.
    relabel(service, second, "ca-tsa-20261205000000-123456")
    restarted = service_with(config, service.database.url, clock)
    assert restarted.ca.renew_service_keys_if_due() == []
    assert superseded(restarted) == {first: OCSP, second: TSA}
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
    assert sorted(restarted.ca.remove_superseded_keys()) == sorted([first, second])
    assert not on_token(restarted, first) and not on_token(restarted, second)


def test_a_key_on_the_token_that_cannot_be_described_stops_neither_the_search_nor_the_removals(
        config, tmp_path, damaged_key):
    """A private key whose curve cannot be read (a generation cut short by a crash leaves one, as
    does another application's bad object), labelled as this CA labels its keys or not: the pass
    records this CA's leftover and removes it as before, and leaves the damaged object alone."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "damaged.db", clock)
    clock.advance(seconds=RENEWAL_DUE.total_seconds())
    left, replaced = renew_as_before(service, OCSP), service_keys(service)[TSA]
    damaged = [damaged_key(service.keys, "ca-ocsp-responder-20261205000000-123456"), damaged_key(service.keys, "not-ours")]

    assert service.ca.renew_service_keys_if_due() == [TSA]
    assert superseded(service) == {left: OCSP, replaced: TSA}
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
    assert service.ca.renew_service_keys_if_due() == []
    assert not on_token(service, left) and not on_token(service, replaced) and superseded(service) == {}
    assert all(on_token(service, key_id) for key_id in damaged)
    check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now())


def test_the_search_for_leftovers_costs_two_searches_of_the_token_however_many_keys_are_labelled(config, tmp_path):
    """Each search walks every object of the token: one per labelled key made the first pass of a
    process cost the token's size for every service key of every CA sharing it."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "counted.db", clock)
    left = renew_as_before(service, OCSP)
    others = [own_ca(config, tmp_path / f"other-{n}.db", clock) for n in range(3)]  # their keys labelled alike
    for other in others:
        renew_as_before(other, TSA)
    labelled = [key for key in service.keys.list() if key.label.startswith("ca-")]
    assert len(labelled) >= 2 * 4 + 4  # each CA's two service keys, and the four that renewals left

    restarted = service_with(config, service.database.url, clock)  # a session of its own: nothing read yet
    before = restarted.keys.session.searches
    assert LeftoverServiceKeys(restarted.database, restarted.keys, clock).record_once() == [left]
    assert restarted.keys.session.searches - before == 2  # the private keys, then the public keys
    assert superseded(restarted) == {left: OCSP}
