"""Certificate profiles: what each kind of certificate contains.

The holder profiles follow the documents: cloud-signature account certificates (key generated in
the HSM for the account), qualified certificates (key on a smart card, from a CSR; with a
transaction limit and the agent's qualification), standard and encryption certificates, each in a
government and a corporate variant. The service profiles are the server's own: TLS server, the
client certificates of applications (ASP) and registration authorities (RA), and the OCSP
responder. Each profile's policy identifier is the CA's arc (``ca.policy_oid_arc``) and the
profile's own number, e.g. 1.3.6.1.4.1.32473.1.2.1 for qualified government certificates; a
``[ca.profiles.NAME]`` policy_oid replaces one profile's whole identifier.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any, Mapping

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from signserver.config import DEFAULT_POLICY_OID_ARC
from signserver.errors import ConfigurationError, InvalidArgument


class KeySource(enum.Enum):
    HSM = "hsm"  # generated in this server's HSM for the account
    CSR = "csr"  # the holder's own key (smart card, ...), proved by a CSR


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    policy_number: str  # under the CA's policy arc
    key_source: KeySource
    key_usage: frozenset[str]  # x509.KeyUsage field names; "encipherment" picks by key type
    extended_key_usage: tuple[ObjectIdentifier, ...] = ()
    holder: bool = True  # issued for an account's holder
    qualified: bool = False  # QCStatements; transaction limit and agent qualification allowed
    variant: str = ""  # government | corporate
    validity_days: int | None = None  # None: the CA's default (ca.validity_days)
    cps_uri: str | None = None  # None: the CA's (ca.cps_uri)
    policy_oid: str = ""  # the arc and policy_number, set by profile(); a setting may replace it

    @property
    def policy(self) -> ObjectIdentifier:
        return ObjectIdentifier(self.policy_oid)


_SIGNING = frozenset({"digital_signature", "content_commitment"})
_PROFILES: dict[str, Profile] = {}


def _holder_profiles(kind: str, title: str, number: int, source: KeySource, key_usage: frozenset[str],
                     eku: tuple[ObjectIdentifier, ...] = (), qualified: bool = False) -> None:
    for variant_number, variant in ((1, "government"), (2, "corporate")):
        profile = Profile(name=f"{kind}-{variant}", title=f"{title} ({variant})",
                          policy_number=f"{number}.{variant_number}",
                          key_source=source, key_usage=key_usage, extended_key_usage=eku,
                          qualified=qualified, variant=variant)
        _PROFILES[profile.name] = profile


_holder_profiles("cloud-signature", "cloud-signature account certificate", 1,
                 KeySource.HSM, _SIGNING)
_holder_profiles("qualified", "qualified certificate", 2,
                 KeySource.CSR, _SIGNING, qualified=True)
_holder_profiles("standard", "standard certificate", 3,
                 KeySource.CSR, frozenset({"digital_signature"}),
                 (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION))
_holder_profiles("encryption", "encryption certificate", 4,
                 KeySource.CSR, frozenset({"encipherment"}), (ExtendedKeyUsageOID.EMAIL_PROTECTION,))

for _profile in (
    Profile("client-asp", "application service provider client", "10",
            KeySource.CSR, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.CLIENT_AUTH,), holder=False),
    Profile("client-ra", "registration authority client", "11",
            KeySource.CSR, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.CLIENT_AUTH,), holder=False),
    Profile("tls-server", "TLS server", "12",
            KeySource.CSR, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.SERVER_AUTH,), holder=False),
    Profile("ocsp-responder", "OCSP responder", "13",
            KeySource.HSM, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.OCSP_SIGNING,), holder=False),
    Profile("timestamping", "time-stamping authority", "14",
            KeySource.HSM, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.TIME_STAMPING,), holder=False),
):
    _PROFILES[_profile.name] = _profile


def _under(arc: str, chosen: Profile) -> Profile:
    return replace(chosen, policy_oid=f"{arc}.{chosen.policy_number}")


for _name, _profile in _PROFILES.items():
    _PROFILES[_name] = _under(DEFAULT_POLICY_OID_ARC, _profile)

# With the default arc: a CA's own (with its settings) come from profile() and all_profiles().
HOLDER_PROFILES = tuple(p for p in _PROFILES.values() if p.holder)


def profile(name: str, settings: Mapping[str, Mapping[str, Any]] | None = None,
            arc: str = DEFAULT_POLICY_OID_ARC) -> Profile:
    """The profile called ``name``, its policy identifier under ``arc``, with its configured
    settings (``[ca.profiles.NAME]``) applied.

    Raises: InvalidArgument: no such profile.
    """
    try:
        chosen = _PROFILES[name]
    except KeyError:
        choices = ", ".join(_PROFILES)
        raise InvalidArgument(f"unknown certificate profile {name!r}; choose one of {choices}") from None
    return replace(_under(arc, chosen), **(settings or {}).get(name, {}))


def check_settings(settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Raises: ConfigurationError: a [ca.profiles.NAME] table names no profile."""
    for name in settings:
        if name not in _PROFILES:
            raise ConfigurationError(f"ca.profiles.{name}", f"no such profile; one of {', '.join(_PROFILES)}")


def all_profiles(settings: Mapping[str, Mapping[str, Any]] | None = None,
                 arc: str = DEFAULT_POLICY_OID_ARC) -> list[Profile]:
    """Every profile as :func:`profile` gives it."""
    return [profile(name, settings, arc) for name in _PROFILES]
