"""Translation of python-pkcs11 errors into the signserver hierarchy, at the one place they enter."""

from __future__ import annotations

import logging

import pkcs11.exceptions as p11

from signserver.errors import (
    HsmError,
    HsmLoginFailed,
    HsmOperationFailed,
    HsmPinLocked,
    HsmUnavailable,
    InvalidArgument,
    SignServerError,
    TokenNotFound,
    UnsupportedAlgorithm,
)

log = logging.getLogger(__name__)

# Errors after which the session (or the module) must be opened again; retried once. Every
# handle python-pkcs11 has an error for is here: a handle kept from a session or a token that
# went away (SoftHSM's token files removed, a device unplugged) is refused as invalid by the next
# call that passes it, as the key that unwraps a holder's package (UnwrappingKeyHandleInvalid).
SESSION_LOST = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.UserNotLoggedIn,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.KeyHandleInvalid,
    p11.ObjectHandleInvalid,
    p11.UnwrappingKeyHandleInvalid,
    p11.WrappingKeyHandleInvalid,
)


def is_session_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the session, a cached handle or the module state is gone."""
    if isinstance(exc, SESSION_LOST):
        return True
    # python-pkcs11 has no class for CKR_CRYPTOKI_NOT_INITIALIZED, only this message.
    return type(exc) is p11.PKCS11Error and "not initialized" in str(exc)


def translate(exc: p11.PKCS11Error, doing: str) -> SignServerError:
    """Return the signserver error for a python-pkcs11 error raised while ``doing`` something.

    ``doing`` completes the sentence "cannot ...", e.g. ``"sign with key 'alice'"``.
    """
    name = type(exc).__name__
    if isinstance(exc, p11.PinIncorrect):
        return HsmLoginFailed(
            f"cannot {doing}: the token refused the PIN; it is not tried again, so check the PIN "
            "before the token's own lockout is reached"
        )
    if isinstance(exc, p11.PinLocked):
        return HsmPinLocked(f"cannot {doing}: the PIN is locked; the security officer must unblock it")
    if isinstance(exc, (p11.PinInvalid, p11.PinLenRange, p11.PinTooWeak)):
        return InvalidArgument(f"cannot {doing}: the token does not accept that PIN ({name})")
    if isinstance(exc, (p11.MechanismInvalid, p11.MechanismParamInvalid, p11.FunctionNotSupported,
                        p11.KeySizeRange, p11.DomainParamsInvalid)):
        return UnsupportedAlgorithm(f"cannot {doing}: the token does not support it ({name})")
    if isinstance(exc, (p11.DataLenRange, p11.DataInvalid, p11.KeyTypeInconsistent)):
        return InvalidArgument(f"cannot {doing}: the input does not fit the key ({name})")
    if isinstance(exc, p11.PinExpired):
        return HsmLoginFailed(f"cannot {doing}: the PIN has expired; change it first")
    if isinstance(exc, (p11.TokenWriteProtected, p11.SessionReadOnly)):
        return HsmOperationFailed(f"cannot {doing}: the token is write-protected")
    if isinstance(exc, (p11.SessionExists, p11.SessionReadOnlyExists)):
        return HsmOperationFailed(
            f"cannot {doing}: a session is open on the token; stop the server and every other "
            "program using the token first"
        )
    if isinstance(exc, (p11.SessionReadWriteSOExists, p11.AnotherUserAlreadyLoggedIn)):
        return HsmOperationFailed(f"cannot {doing}: another user is logged in to the token")
    if isinstance(exc, (p11.SlotIDInvalid, p11.TokenNotRecognised)):
        return TokenNotFound(f"cannot {doing}: no usable token in that slot ({name})")
    if isinstance(exc, (p11.UserPinNotInitialized,)):
        return HsmUnavailable(f"cannot {doing}: the token's user PIN is not initialised")
    if is_session_lost(exc) or isinstance(exc, (p11.DeviceError, p11.DeviceMemory, p11.GeneralError)):
        # The caller learns that the token does not answer; what it answered is the operator's.
        log.warning("cannot %s: the token does not answer (it reported %s)", doing, name)
        return HsmUnavailable(f"cannot {doing}: the token does not answer; try again later")
    return HsmError(f"cannot {doing}: the token reported {name}")


# The return values of the PKCS#11 functions called directly (C_InitToken, C_GetTokenInfo), mapped
# to the python-pkcs11 exceptions the wrapped functions raise, so both paths read the same.
# Values from the PKCS#11 v2.40 header (pkcs11t.h).
_RETURN_VALUES: dict[int, type[p11.PKCS11Error]] = {
    0x002: p11.HostMemory,
    0x003: p11.SlotIDInvalid,
    0x005: p11.GeneralError,
    0x006: p11.FunctionFailed,
    0x007: p11.ArgumentsBad,
    0x010: p11.AttributeReadOnly,
    0x011: p11.AttributeSensitive,
    0x012: p11.AttributeTypeInvalid,
    0x013: p11.AttributeValueInvalid,
    0x020: p11.DataInvalid,
    0x021: p11.DataLenRange,
    0x030: p11.DeviceError,
    0x031: p11.DeviceMemory,
    0x032: p11.DeviceRemoved,
    0x050: p11.FunctionCancelled,
    0x054: p11.FunctionNotSupported,
    0x060: p11.KeyHandleInvalid,
    0x062: p11.KeySizeRange,
    0x063: p11.KeyTypeInconsistent,
    0x070: p11.MechanismInvalid,
    0x071: p11.MechanismParamInvalid,
    0x082: p11.ObjectHandleInvalid,
    0x090: p11.OperationActive,
    0x091: p11.OperationNotInitialized,
    0x0A0: p11.PinIncorrect,
    0x0A1: p11.PinInvalid,
    0x0A2: p11.PinLenRange,
    0x0A3: p11.PinExpired,
    0x0A4: p11.PinLocked,
    0x0B0: p11.SessionClosed,
    0x0B1: p11.SessionCount,
    0x0B3: p11.SessionHandleInvalid,
    0x0B5: p11.SessionReadOnly,
    0x0B6: p11.SessionExists,
    0x0B7: p11.SessionReadOnlyExists,
    0x0B8: p11.SessionReadWriteSOExists,
    0x0D0: p11.TemplateIncomplete,
    0x0D1: p11.TemplateInconsistent,
    0x0E0: p11.TokenNotPresent,
    0x0E1: p11.TokenNotRecognised,
    0x0E2: p11.TokenWriteProtected,
    0x100: p11.UserAlreadyLoggedIn,
    0x101: p11.UserNotLoggedIn,
    0x102: p11.UserPinNotInitialized,
    0x104: p11.AnotherUserAlreadyLoggedIn,
    0x105: p11.UserTooManyTypes,
    0x121: p11.RandomNoRNG,
    0x130: p11.DomainParamsInvalid,
    0x1C3: p11.PinTooWeak,
    0x200: p11.FunctionRejected,
}
_CKR_CRYPTOKI_NOT_INITIALIZED = 0x190


def error_for_return_value(rv: int) -> p11.PKCS11Error:
    """The python-pkcs11 exception that a wrapped call would have raised for the return value
    ``rv`` of a direct call (``rv`` is not CKR_OK)."""
    if rv == _CKR_CRYPTOKI_NOT_INITIALIZED:
        return p11.PKCS11Error("Initialisation error (not initialized).")  # what is_session_lost reads
    cls = _RETURN_VALUES.get(rv)
    return cls() if cls is not None else p11.PKCS11Error(f"CKR 0x{rv:x}")


def translate_return_value(rv: int, doing: str) -> SignServerError:
    """Return the signserver error for the return value ``rv`` of a PKCS#11 function called
    directly, with the same class and message as :func:`translate` gives the wrapped calls."""
    exc = error_for_return_value(rv)
    if type(exc) is p11.PKCS11Error and rv != _CKR_CRYPTOKI_NOT_INITIALIZED:
        return HsmError(f"cannot {doing}: the token reported CKR 0x{rv:x}")
    return translate(exc, doing)
