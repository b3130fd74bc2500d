"""Return values of the PKCS#11 functions called directly read like the wrapped calls' errors."""

from __future__ import annotations

import uuid

import pkcs11.exceptions as p11
import pytest

from signserver.errors import HsmError, HsmLoginFailed, HsmOperationFailed, HsmPinLocked, InvalidArgument, TokenNotFound
from signserver.hsm.admin import TokenAdministrator
from signserver.hsm.session import TokenSession
from signserver.hsm.translate import translate, translate_return_value
from signserver.secret import Secret
from tests.conftest import requires_softhsm

pytestmark = pytest.mark.one_store  # touches no store


@pytest.mark.parametrize("rv,exception,expected", [
    (0xA0, p11.PinIncorrect, HsmLoginFailed),
    (0xA4, p11.PinLocked, HsmPinLocked),
    (0xA2, p11.PinLenRange, InvalidArgument),
    (0xA1, p11.PinInvalid, InvalidArgument),
    (0xE2, p11.TokenWriteProtected, HsmOperationFailed),
    (0xB6, p11.SessionExists, HsmOperationFailed),
    (0x03, p11.SlotIDInvalid, TokenNotFound),
])
def test_a_return_value_reads_as_the_wrapped_error(rv, exception, expected):
    direct = translate_return_value(rv, "initialise the token in slot 3")
    wrapped = translate(exception(), "initialise the token in slot 3")
    assert type(direct) is type(wrapped) is expected
    assert str(direct) == str(wrapped)
    assert "CKR" not in str(direct)


def test_an_unknown_return_value_is_named():
    error = translate_return_value(0x80000001, "initialise the token in slot 3")
    assert type(error) is HsmError and "CKR 0x80000001" in str(error)


@requires_softhsm("a token of its own, made in SoftHSM's free slot")
def test_init_while_a_session_is_open_says_so(config):
    admin = TokenAdministrator(config.hsm.module)
    label = f"busy-{uuid.uuid4().hex[:8]}"
    so_pin, user_pin = Secret("so-pin-for-tests"), Secret("user-pin-for-tests")
    admin.init_token(label, so_pin, user_pin)
    slot = next(s.slot_id for s in admin.slots() if s.token_label == label)
    session = TokenSession(config.hsm.module, label, user_pin)
    session.run(lambda s: s.generate_random(8), "log in")
    try:
        with pytest.raises(HsmOperationFailed, match="a session is open on the token"):
            admin.init_token(label, so_pin, user_pin, slot, current_so_pin=so_pin, reinitialise=True)
    finally:
        session.close()
