"""PIN lengths: read from the token, checked before it sees a PIN, and met by generated PINs."""

from __future__ import annotations

import string

import pytest

from signserver.errors import InvalidArgument
from signserver.hsm.module import load_module, pkcs11_lock
from signserver.hsm.pin_rules import PinLengths, read_pin_lengths
from signserver.secret import Secret
from tests.conftest import requires_softhsm

pytestmark = pytest.mark.one_store  # touches no store


@requires_softhsm("SoftHSM's PIN lengths")
def test_softhsm_advertises_4_to_255(config):
    with pkcs11_lock():
        lib = load_module(config.hsm.module)
        slot = next(iter(lib.get_slots(token_present=True)))
        assert read_pin_lengths(config.hsm.module, slot.slot_id) == PinLengths(4, 255)


@pytest.mark.parametrize("lengths,expected", [
    (PinLengths(4, 8), 8),        # openCryptoki's soft token
    (PinLengths(4, 255), 32),     # SoftHSM
    (PinLengths(6, 12), 12),      # a smart card
    (PinLengths(40, None), 40),   # a token that names no maximum but a long minimum
])
def test_generated_pins_fit_the_token(lengths, expected):
    pins = {lengths.generate().reveal() for _ in range(20)}
    assert len(pins) == 20
    for pin in pins:
        assert len(pin) == expected and set(pin) <= set(string.hexdigits.lower())
        lengths.check(Secret(pin), "PIN")


def test_limits_no_pin_meets_are_refused():
    with pytest.raises(InvalidArgument, match="no PIN fits"):
        PinLengths(10, 8).generate()


def test_a_pin_outside_the_lengths_is_refused_naming_the_limits_only():
    with pytest.raises(InvalidArgument, match="has 9 characters; this token takes PINs of 4 to 8") as refused:
        PinLengths(4, 8).check(Secret("123456789"), "user PIN")
    assert "123456789" not in str(refused.value)
    with pytest.raises(InvalidArgument, match="4 to 8"):
        PinLengths(4, 8).check(Secret("123"), "user PIN")
    PinLengths(4, 8).check(Secret("1234"), "user PIN")
    PinLengths(4, 8).check(Secret("12345678"), "user PIN")
