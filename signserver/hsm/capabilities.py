"""TokenCapabilities: what a token can do, read from its mechanism list, and the one place where
signserver chooses among mechanisms and algorithms.

Tokens differ: SoftHSM offers EC, EdDSA, AES-GCM and AES key wrap; openCryptoki's soft token only
RSA and AES-CBC; a network HSM its own list. Each part that needs a mechanism keeps its own table
of preferences (best first, each entry with the mechanisms it needs and the name recorded beside
what it produced, so that what was made under an older choice keeps opening) and asks
:meth:`TokenCapabilities.choose`; nothing else looks at the mechanism list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar

from pkcs11 import Mechanism

from signserver.errors import ConfigurationError, UnsupportedAlgorithm
from signserver.hsm.algorithms import KeyAlgorithm

T = TypeVar("T")

AUTO = "auto"  # a key algorithm setting that leaves the choice to the token's mechanism list

# What generating a key pair of a family and signing with it take.
_KEY_FAMILY_MECHANISMS = {
    "rsa": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS),
    "ec": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    "ed25519": (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
}


def key_algorithm_mechanisms(algorithm: KeyAlgorithm) -> tuple[Mechanism, ...]:
    """The mechanisms a token must offer to generate ``algorithm`` keys and sign with them."""
    return _KEY_FAMILY_MECHANISMS[algorithm.family]


@dataclass(frozen=True)
class TokenCapabilities:
    """A token's mechanism list, and choices made from it."""

    mechanisms: frozenset[Mechanism]

    def offers(self, *mechanisms: Mechanism) -> bool:
        """Whether the token offers every one of ``mechanisms``."""
        return all(m in self.mechanisms for m in mechanisms)

    def can_use(self, algorithm: KeyAlgorithm) -> bool:
        """Whether the token can generate ``algorithm`` key pairs and sign with them."""
        return self.offers(*key_algorithm_mechanisms(algorithm))

    def choose(self, preferences: Sequence[tuple[T, Iterable[Mechanism]]], what: str) -> T:
        """The first choice of ``preferences`` whose mechanisms the token all offers.

        ``what`` names the need in the error ("sealing OTP seeds").

        Raises:
            UnsupportedAlgorithm: the token offers none of them; the message lists what would do.
        """
        for choice, needed in preferences:
            if self.offers(*needed):
                return choice
        wanted = "; ".join(" + ".join(m.name for m in needed) for _, needed in preferences)
        raise UnsupportedAlgorithm(f"the token offers no mechanism for {what} (any of: {wanted})")

    def best_key_algorithm(self, preferences: Sequence[KeyAlgorithm], what: str) -> KeyAlgorithm:
        """The first of ``preferences`` the token can generate and sign with.

        Raises: UnsupportedAlgorithm: it can use none of them.
        """
        return self.choose([(a, key_algorithm_mechanisms(a)) for a in preferences], what)

    def require_key_algorithm(self, algorithm: KeyAlgorithm, setting: str) -> KeyAlgorithm:
        """``algorithm`` if the token can use it, chosen by ``setting`` (named in the error).

        Raises: UnsupportedAlgorithm: the token cannot generate or sign with it.
        """
        if not self.can_use(algorithm):
            needed = " + ".join(m.name for m in key_algorithm_mechanisms(algorithm))
            raise UnsupportedAlgorithm(f"{setting} is {algorithm.value}, which the token cannot generate or sign "
                                       f"with (it lacks {needed}); choose another or leave it to the token (auto)")
        return algorithm

    def key_algorithm_setting(self, value: str, preferences: Sequence[KeyAlgorithm], setting: str,
                              allowed: Sequence[KeyAlgorithm] | None = None) -> KeyAlgorithm:
        """The key algorithm a setting asks for: with ``auto``, the first of ``preferences`` the
        token can use; else the one named, which must be among ``allowed`` (by default
        ``preferences``) and usable here.

        Raises: ConfigurationError (naming ``setting``): an algorithm this use does not take, one
            the token cannot use, or (``auto``) a token that can use none of ``preferences``.
        """
        try:
            if value.strip().lower() == AUTO:
                return self.best_key_algorithm(preferences, f"{setting} (auto)")
            algorithm = KeyAlgorithm.parse(value)
            allowed = preferences if allowed is None else allowed
            if algorithm not in allowed:
                names = ", ".join(a.value for a in allowed)
                raise UnsupportedAlgorithm(f"{algorithm.value} is not taken here; choose auto or one of {names}")
            return self.require_key_algorithm(algorithm, setting)
        except UnsupportedAlgorithm as exc:
            raise ConfigurationError(setting, str(exc)) from None
