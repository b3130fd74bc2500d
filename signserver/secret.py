"""A wrapper that keeps secrets (PINs, passwords, OTP seeds) out of logs and tracebacks."""

from __future__ import annotations


class Secret:
    """A secret string whose ``repr`` and ``str`` never show the value.

    Call :meth:`reveal` at the one place the value is really needed (for example, the
    ``C_Login`` call), so that a secret can be followed through the code by that name.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """Return the secret value."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
