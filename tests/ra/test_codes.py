"""E-mail codes alone: 6 digits, expiry, attempts, the 30-day reuse, and only a hash kept."""

from __future__ import annotations

import datetime

import pytest

from signserver.ra import codes
from signserver.ra.errors import CodeRefused
from tests.ra.conftest import START

SECOND = datetime.timedelta(seconds=1)


def test_a_code_is_six_digits_and_only_its_salted_hash_is_kept():
    verification, code = codes.issue("r1", "a@example.mo", START, 300)
    assert len(code) == 6 and code.isdigit()
    assert code.encode() not in verification.code_hash and code not in repr(verification)
    other, _ = codes.issue("r1", "a@example.mo", START, 300)
    assert other.salt != verification.salt
    assert verification.expires_at == START + 300 * SECOND


def test_the_right_code_verifies_within_300_seconds():
    verification, code = codes.issue("r1", "a@example.mo", START, 300)
    counted, matched = codes.attempt(verification, code, START + 299 * SECOND, 5)
    assert matched and counted.verified_at == START + 299 * SECOND and counted.attempts == 1


def test_a_code_after_300_seconds_is_refused():
    verification, code = codes.issue("r1", "a@example.mo", START, 300)
    with pytest.raises(CodeRefused, match="expired"):
        codes.attempt(verification, code, START + 300 * SECOND, 5)


def test_attempts_are_limited():
    verification, code = codes.issue("r1", "a@example.mo", START, 300)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        verification, matched = codes.attempt(verification, wrong, START, 5)
        assert not matched
    with pytest.raises(CodeRefused, match="too many"):
        codes.attempt(verification, code, START, 5)


def test_a_verified_address_is_not_asked_again_for_30_days():
    verification, code = codes.issue("r1", "a@example.mo", START, 300)
    verified, _ = codes.attempt(verification, code, START, 5)
    assert codes.still_verified(verified, START + datetime.timedelta(days=30), 30)
    assert not codes.still_verified(verified, START + datetime.timedelta(days=30, seconds=1), 30)
    assert not codes.still_verified(verification, START, 30)


def test_an_address_is_blocked_once_it_has_a_blocking_time():
    assert not codes.CodeLimits(codes_sent=5, failures=9).blocked
    assert codes.CodeLimits(codes_sent=1, failures=10, blocked_at=START).blocked
