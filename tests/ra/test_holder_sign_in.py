"""The notice link's sign-in over the RA's real database: following the link spends nothing, the
code goes to the notice's addresses, the right code spends the link (the JSON API's token too),
wrong codes are counted per renewal across sessions, and new links by e-mail address."""

from __future__ import annotations

import datetime
import re
from dataclasses import replace

import pytest

from signserver.ra import renewal as machine
from signserver.ra.errors import CodeRefused, HolderNotAuthorised
from signserver.ra.holder_sign_in import SIGN_IN_LIMITS, HolderSignIn, NoticeSignIn, mask_address
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.workflow import RenewalWorkflow
from tests.ra.conftest import KUAN, NoCore, opened_renewal

FAR_FUTURE = datetime.datetime(2200, 1, 1, tzinfo=datetime.timezone.utc)
LINK = re.compile(r"https://ra\.example\.mo/notice/([0-9a-f]{32})/([A-Za-z0-9_\-]{20,})")
CODE = re.compile(r"Sign-in code: (\d{6})")


@pytest.fixture
def settings(tmp_path) -> RaSettings:
    return RaSettings(state_dir=tmp_path, public_url="https://ra.example.mo", code_failures=4,
                      notice_days=60)


@pytest.fixture
def workflow(ra_database, ra_clock, settings):
    return RenewalWorkflow(ra_database, ra_clock, settings, registry=NoCore(), certificates=NoCore())


@pytest.fixture
def sign_in(ra_database, ra_clock, settings):
    return HolderSignIn(ra_database, ra_clock, settings)


def outbox(database) -> list[tuple[str, str]]:
    with database.transaction() as conn:
        return [(row.recipient, row.body) for row in repository.due_emails(conn, FAR_FUTURE, 1000)]


def noticed(workflow, database, clock) -> tuple[str, str]:
    """A confirmed renewal whose notice went out: its id and the token of the link in the notice."""
    now = clock.now()
    renewal = opened_renewal(database, KUAN, now)
    with database.transaction() as conn:
        repository.save_renewal(conn, machine.confirm(renewal, "operator", now))
    assert workflow.run_notices() == 1
    links = {LINK.search(body).groups() for _, body in outbox(database)}
    assert len(links) == 1  # one link, to every address of the holder
    renewal_id, token = links.pop()
    assert renewal_id == renewal.id
    return renewal_id, token


def last_code(database) -> str:
    return CODE.findall(outbox(database)[-1][1])[-1]


def test_the_notice_carries_the_link_and_the_access_key(workflow, ra_database, ra_clock):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    body = outbox(ra_database)[0][1]
    assert f"Access key: {token}" in body  # the JSON API's clients go on as before
    assert workflow.check_holder(renewal_id, token).id == renewal_id


def test_following_the_link_spends_nothing(workflow, sign_in, ra_database, ra_clock):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    with ra_database.transaction() as conn:
        trail = len(repository.audit_entries(conn))
    for _ in range(3):  # a mail scanner, then the holder
        pending = sign_in.follow_link(renewal_id, token)
    assert pending.renewal_id == renewal_id and token not in str(pending.to_data())
    assert workflow.check_holder(renewal_id, token).id == renewal_id
    with ra_database.transaction() as conn:
        assert len(repository.audit_entries(conn)) == trail


@pytest.mark.parametrize("which", ["wrong token", "unknown renewal"])
def test_a_wrong_link_gets_one_answer(workflow, sign_in, ra_database, ra_clock, which):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    if which == "wrong token":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    else:
        renewal_id = "0" * 32
    with pytest.raises(HolderNotAuthorised, match="not valid"):
        sign_in.follow_link(renewal_id, token)


def test_the_right_code_spends_the_link(workflow, sign_in, ra_database, ra_clock):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    pending = sign_in.send_code(sign_in.follow_link(renewal_id, token))
    sent_to = [recipient for recipient, body in outbox(ra_database) if "Sign-in code" in body]
    assert sent_to == list(KUAN.emails)
    code = last_code(ra_database)
    assert code not in str(pending.to_data())
    kept = NoticeSignIn.from_data(pending.to_data())  # as the session keeps it
    renewal = sign_in.verify(kept, code)
    assert renewal.id == renewal_id and renewal.account == KUAN.account
    with pytest.raises(HolderNotAuthorised):  # the link is spent: for a new session ...
        sign_in.follow_link(renewal_id, token)
    with pytest.raises(HolderNotAuthorised):  # ... and for the JSON API
        workflow.check_holder(renewal_id, token)
    with pytest.raises(HolderNotAuthorised):  # the same code again
        sign_in.verify(kept, code)
    with ra_database.transaction() as conn:
        entries = repository.audit_entries(conn, renewal_id)
    assert [e["action"] for e in entries][-2:] == ["sign_in_code_sent", "notice_link_spent"]
    assert not any(code in e["detail"] or token in e["detail"] for e in entries)


def test_wrong_codes_are_counted_per_renewal_across_sessions(workflow, sign_in, ra_database, ra_clock):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    pending = sign_in.send_code(sign_in.follow_link(renewal_id, token))
    code = last_code(ra_database)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(2):
        with pytest.raises(CodeRefused, match="not the one sent"):
            sign_in.verify(pending, wrong)
    with ra_database.transaction() as conn:  # counted in the database, the session keeps the code's id alone
        assert repository.verifications(conn, renewal_id, SIGN_IN_LIMITS)[0].attempts == 2
    assert type(pending.to_data()["code"]) is int
    ra_clock.advance(seconds=61)
    fresh = sign_in.send_code(sign_in.follow_link(renewal_id, token))  # a new session: its own code
    with pytest.raises(CodeRefused, match="not the one sent"):
        sign_in.verify(fresh, wrong)
    with pytest.raises(CodeRefused, match="too many") as blocked:  # the 4th wrong code (code_failures) blocks
        sign_in.verify(fresh, wrong)
    assert blocked.value.reason == "blocked"
    with pytest.raises(CodeRefused, match="too many"):  # even the right code now
        sign_in.verify(fresh, last_code(ra_database))
    with pytest.raises(CodeRefused, match="too many"):
        ra_clock.advance(seconds=61)
        sign_in.send_code(fresh)
    assert workflow.check_holder(renewal_id, token).id == renewal_id  # not spent
    workflow.reopen_limits(renewal_id, "operator")
    ra_clock.advance(seconds=61)
    again = sign_in.send_code(fresh)
    assert sign_in.verify(again, last_code(ra_database)).id == renewal_id


def test_each_sign_in_with_the_right_code_starts_the_count_of_codes_again(workflow, sign_in, ra_database, ra_clock,
                                                                          settings):
    """A holder who comes back through a new link each time is never blocked by codes used to sign
    in; codes asked and never used still count toward code_sends."""
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    for _ in range(settings.code_sends + 1):
        pending = sign_in.send_code(sign_in.follow_link(renewal_id, token))
        assert sign_in.verify(pending, last_code(ra_database)).id == renewal_id
        ra_clock.advance(seconds=1800)  # the holder comes back later, through a new link (this one is spent)
        assert sign_in.new_link(KUAN.emails[0]) == 1
        _, token = LINK.search(outbox(ra_database)[-1][1]).groups()
    for _ in range(settings.code_sends):  # asked, never typed
        sign_in.send_code(sign_in.follow_link(renewal_id, token))
        ra_clock.advance(seconds=61)
    with pytest.raises(CodeRefused, match="too many") as blocked:
        sign_in.send_code(sign_in.follow_link(renewal_id, token))
    assert blocked.value.reason == "blocked"


def test_a_code_s_attempts_are_counted_once_for_requests_that_read_the_session_together(workflow, ra_database,
                                                                                       ra_clock, settings):
    sign_in = HolderSignIn(ra_database, ra_clock, replace(settings, code_attempts=3))  # below code_failures (4)
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    data = sign_in.send_code(sign_in.follow_link(renewal_id, token)).to_data()
    code = last_code(ra_database)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    # Requests of one session sent at once each read the session before any of them writes it back.
    first, second = NoticeSignIn.from_data(data), NoticeSignIn.from_data(data)
    for pending in (first, first, second):
        with pytest.raises(CodeRefused, match="not the one sent"):
            sign_in.verify(pending, wrong)
    for pending in (second, first, NoticeSignIn.from_data(data)):
        with pytest.raises(CodeRefused, match="too many wrong codes") as used_up:  # even the right code
            sign_in.verify(pending, code)
        assert used_up.value.reason == "used_up"


def test_codes_expire_and_are_not_sent_twice_a_minute(workflow, sign_in, ra_database, ra_clock, settings):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    pending = sign_in.send_code(sign_in.follow_link(renewal_id, token))
    with pytest.raises(CodeRefused, match="less than 60 seconds"):
        sign_in.send_code(pending)
    with pytest.raises(CodeRefused, match="no code was sent"):
        sign_in.verify(sign_in.follow_link(renewal_id, token), "123456")
    ra_clock.advance(seconds=settings.code_seconds)
    with pytest.raises(CodeRefused, match="expired") as expired:
        sign_in.verify(pending, last_code(ra_database))
    assert expired.value.reason == "expired"


def test_a_new_link_replaces_the_one_before(workflow, sign_in, ra_database, ra_clock):
    renewal_id, token = noticed(workflow, ra_database, ra_clock)
    pending = sign_in.follow_link(renewal_id, token)
    assert sign_in.new_link("nobody@example.mo") == 0
    assert sign_in.new_link("not an address") == 0
    before = len(outbox(ra_database))
    assert sign_in.new_link("  LUZIA.Kuan@Example.MO ") == 1
    recipient, body = outbox(ra_database)[before]
    assert recipient == "luzia.kuan@example.mo"  # only the address typed, as the renewal lists it
    new_id, new_token = LINK.search(body).groups()
    assert new_id == renewal_id and new_token != token
    with pytest.raises(HolderNotAuthorised):  # the link before stops working, in a session too
        sign_in.send_code(pending)
    assert sign_in.follow_link(renewal_id, new_token).renewal_id == renewal_id


def test_a_finished_renewal_gets_no_new_link(workflow, sign_in, ra_database, ra_clock):
    renewal_id, _ = noticed(workflow, ra_database, ra_clock)
    with ra_database.transaction() as conn:
        renewal = repository.get_renewal(conn, renewal_id)
        repository.save_renewal(conn, machine.refuse(renewal, "test", ra_clock.now()))
    assert sign_in.new_link(KUAN.emails[0]) == 0


def test_addresses_are_masked():
    assert mask_address("kuan@example.mo") == "k***@example.mo"
    assert mask_address("x") == "***"


def test_session_data_that_is_not_ours_is_ignored():
    for data in (None, {}, {"renewal": "r"}, {"renewal": "r", "link": "l", "code": {"hash": "zz"}}, "text",
                 {"renewal": "r", "link": "l", "code": "1"}, {"renewal": "r", "link": "l", "code": True},
                 {"renewal": "r", "link": "l", "code": 2 ** 31}):
        assert NoticeSignIn.from_data(data) is None
