"""The PIN lengths a token accepts (CK_TOKEN_INFO ulMinPinLen / ulMaxPinLen), checking a PIN
against them and generating one within them.

python-pkcs11 does not read these two fields, so C_GetTokenInfo is called directly. Tokens differ
widely: SoftHSM takes 4 to 255 characters, openCryptoki's soft token 4 to 8, many smart cards 4 to
8 or 6 to 12. A PIN outside the limits is refused here, before the token sees it.
"""

from __future__ import annotations

import ctypes
import secrets
from dataclasses import dataclass
from pathlib import Path

from signserver.errors import InvalidArgument
from signserver.hsm.translate import translate_return_value
from signserver.secret import Secret

# The longest PIN generated, when the token accepts longer ones: 32 hex digits, 128 bits.
GENERATED_PIN_LENGTH = 32
# CK_UNAVAILABLE_INFORMATION: the token does not say.
_UNAVAILABLE = ctypes.c_ulong(-1).value


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _TokenInfo(ctypes.Structure):
    """CK_TOKEN_INFO as laid out on Unix (natural alignment, CK_ULONG = unsigned long)."""

    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturerID", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serialNumber", ctypes.c_char * 16),
        ("flags", ctypes.c_ulong),
        ("ulMaxSessionCount", ctypes.c_ulong),
        ("ulSessionCount", ctypes.c_ulong),
        ("ulMaxRwSessionCount", ctypes.c_ulong),
        ("ulRwSessionCount", ctypes.c_ulong),
        ("ulMaxPinLen", ctypes.c_ulong),
        ("ulMinPinLen", ctypes.c_ulong),
        ("ulTotalPublicMemory", ctypes.c_ulong),
        ("ulFreePublicMemory", ctypes.c_ulong),
        ("ulTotalPrivateMemory", ctypes.c_ulong),
        ("ulFreePrivateMemory", ctypes.c_ulong),
        ("hardwareVersion", _Version),
        ("firmwareVersion", _Version),
        ("utcTime", ctypes.c_char * 16),
    ]


@dataclass(frozen=True)
class PinLengths:
    """How many bytes a PIN of this token has: ``minimum`` to ``maximum`` (None: not said)."""

    minimum: int
    maximum: int | None

    def describe(self) -> str:
        return f"{self.minimum} to {self.maximum}" if self.maximum is not None else f"at least {self.minimum}"

    def check(self, pin: Secret, what: str) -> None:
        """Refuse a PIN the token would refuse; the message names the limits, never the PIN.

        Raises:
            InvalidArgument: the PIN is shorter or longer than the token accepts.
        """
        length = len(pin.reveal().encode("utf-8"))  # PKCS#11 counts the bytes of the UTF-8 PIN
        if length < self.minimum or (self.maximum is not None and length > self.maximum):
            raise InvalidArgument(
                f"the {what} has {length} characters; this token takes PINs of {self.describe()} characters"
            )

    def generate(self) -> Secret:
        """A random PIN of hex digits, as long as the token allows up to GENERATED_PIN_LENGTH.

        Raises:
            InvalidArgument: the token's minimum is above GENERATED_PIN_LENGTH or its maximum
                below its minimum (limits no PIN can meet).
        """
        length = GENERATED_PIN_LENGTH if self.maximum is None else min(self.maximum, GENERATED_PIN_LENGTH)
        length = max(length, self.minimum)
        if self.maximum is not None and length > self.maximum:
            raise InvalidArgument(f"no PIN fits this token's limits ({self.describe()} characters)")
        return Secret(secrets.token_hex((length + 1) // 2)[:length])


def read_pin_lengths(module: Path, slot_id: int) -> PinLengths:
    """The PIN lengths the token in ``slot_id`` advertises. Call with the PKCS#11 lock held,
    after :func:`signserver.hsm.module.load_module` (this shares its initialisation).

    Raises:
        TokenNotFound: no token in that slot.
        HsmError: the module refused C_GetTokenInfo.
    """
    function = ctypes.CDLL(str(module)).C_GetTokenInfo
    function.argtypes = [ctypes.c_ulong, ctypes.POINTER(_TokenInfo)]
    function.restype = ctypes.c_ulong
    info = _TokenInfo()
    rv = function(slot_id, ctypes.byref(info))
    if rv != 0:
        raise translate_return_value(rv, f"read the token information of slot {slot_id}")
    maximum = None if info.ulMaxPinLen in (_UNAVAILABLE, 0) else info.ulMaxPinLen
    minimum = 0 if info.ulMinPinLen == _UNAVAILABLE else info.ulMinPinLen
    return PinLengths(minimum=max(minimum, 1), maximum=maximum)
