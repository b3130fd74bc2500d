"""Translation of python-pkcs11 errors into the signserver hierarchy, at the one place they enter."""

from __future__ import annotations

import pkcs11.exceptions as p11

from signserver.errors import (
    HsmError,
    HsmLoginFailed,
    HsmOperationFailed,
    HsmPinLocked,
    HsmUnavailable,
    InvalidArgument,
    SignServerError,
    UnsupportedAlgorithm,
)

# Errors after which the session (or the module) must be opened again; retried once.
SESSION_LOST = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.UserNotLoggedIn,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.KeyHandleInvalid,
    p11.ObjectHandleInvalid,
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
    if isinstance(exc, (p11.TokenWriteProtected, p11.SessionReadOnly)):
        return HsmOperationFailed(f"cannot {doing}: the token is write-protected")
    if isinstance(exc, (p11.UserPinNotInitialized,)):
        return HsmUnavailable(f"cannot {doing}: the token's user PIN is not initialised")
    if is_session_lost(exc) or isinstance(exc, (p11.DeviceError, p11.DeviceMemory, p11.GeneralError)):
        return HsmUnavailable(f"cannot {doing}: the token does not answer ({name})")
    return HsmError(f"cannot {doing}: the token reported {name}")
