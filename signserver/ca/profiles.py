"""Certificate profiles: what each kind of certificate contains.

The holder profiles follow the documents: cloud-signature account certificates (key generated in
the HSM for the account), qualified certificates (key on a smart card, from a CSR; with a
transaction limit and the agent's qualification), standard and encryption certificates, each in a
government and a corporate variant. The service profiles are the server's own: TLS server, the
client certificates of applications (ASP) and registration authorities (RA), and the OCSP
responder. Policy identifiers are UUID-based OIDs (ITU-T X.667, arc 2.25): unique without
registration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any, Mapping

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from signserver.errors import ConfigurationError, InvalidArgument

BASE_POLICY = "2.25.109816206335228886879044430219771524734"


class KeySource(enum.Enum):
    HSM = "hsm"  # generated in this server's HSM for the account
    CSR = "csr"  # the holder's own key (smart card, ...), proved by a CSR


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    policy_oid: str
    key_source: KeySource
    key_usage: frozenset[str]  # x509.KeyUsage field names; "encipherment" picks by key type
    extended_key_usage: tuple[ObjectIdentifier, ...] = ()
    holder: bool = True  # issued for an account's holder
    qualified: bool = False  # QCStatements; transaction limit and agent qualification allowed
    variant: str = ""  # government | corporate
    validity_days: int | None = None  # None: the CA's default (ca.validity_days)
    cps_uri: str | None = None  # None: the CA's (ca.cps_uri)

    @property
    def policy(self) -> ObjectIdentifier:
        return ObjectIdentifier(self.policy_oid)


_SIGNING = frozenset({"digital_signature", "content_commitment"})
_PROFILES: dict[str, Profile] = {}


def _holder_profiles(kind: str, title: str, oids: dict[str, str], source: KeySource, key_usage: frozenset[str],
                     eku: tuple[ObjectIdentifier, ...] = (), qualified: bool = False) -> None:
    for variant, oid in oids.items():
        profile = Profile(name=f"{kind}-{variant}", title=f"{title} ({variant})", policy_oid=oid,
                          key_source=source, key_usage=key_usage, extended_key_usage=eku,
                          qualified=qualified, variant=variant)
        _PROFILES[profile.name] = profile


_holder_profiles("cloud-signature", "cloud-signature account certificate",
                 {"government": "2.25.89771664763172759333592535454161566165",
                  "corporate": "2.25.314572527562733777757933136407759035378"},
                 KeySource.HSM, _SIGNING)
_holder_profiles("qualified", "qualified certificate",
                 {"government": "2.25.234102483758270351901150892998813927329",
                  "corporate": "2.25.273577983897666683887231853095365459786"},
                 KeySource.CSR, _SIGNING, qualified=True)
_holder_profiles("standard", "standard certificate",
                 {"government": "2.25.266310433278295044102189456870019528955",
                  "corporate": "2.25.52475397435183057795410474808138914073"},
                 KeySource.CSR, frozenset({"digital_signature"}),
                 (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION))
_holder_profiles("encryption", "encryption certificate",
                 {"government": "2.25.25531430431738272088042247484836376509",
                  "corporate": "2.25.133421748481359948864385225010903475456"},
                 KeySource.CSR, frozenset({"encipherment"}), (ExtendedKeyUsageOID.EMAIL_PROTECTION,))

for _profile in (
    Profile("client-asp", "application service provider client", "2.25.127849209622172717964511691155639041597",
            KeySource.CSR, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.CLIENT_AUTH,), holder=False),
    Profile("client-ra", "registration authority client", "2.25.44100205706131386907680927753963262307",
            KeySource.CSR, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.CLIENT_AUTH,), holder=False),
    Profile("tls-server", "TLS server", "2.25.63597365987733284098655344695192897365",
            KeySource.CSR, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.SERVER_AUTH,), holder=False),
    Profile("ocsp-responder", "OCSP responder", "2.25.236000349715114635335292433768943432940",
            KeySource.HSM, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.OCSP_SIGNING,), holder=False),
    Profile("timestamping", "time-stamping authority", "2.25.230573564848503410408242717923190811157",
            KeySource.HSM, frozenset({"digital_signature"}), (ExtendedKeyUsageOID.TIME_STAMPING,), holder=False),
):
    _PROFILES[_profile.name] = _profile

HOLDER_PROFILES = tuple(p for p in _PROFILES.values() if p.holder)
RA_POLICY = _PROFILES["client-ra"].policy
ASP_POLICY = _PROFILES["client-asp"].policy


def profile(name: str, settings: Mapping[str, Mapping[str, Any]] | None = None) -> Profile:
    """The profile called ``name``, with its configured settings (``[ca.profiles.NAME]``) applied.

    Raises: InvalidArgument: no such profile.
    """
    try:
        chosen = _PROFILES[name]
    except KeyError:
        choices = ", ".join(_PROFILES)
        raise InvalidArgument(f"unknown certificate profile {name!r}; choose one of {choices}") from None
    return replace(chosen, **(settings or {}).get(name, {}))


def check_settings(settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Raises: ConfigurationError: a [ca.profiles.NAME] table names no profile."""
    for name in settings:
        if name not in _PROFILES:
            raise ConfigurationError(f"ca.profiles.{name}", f"no such profile; one of {', '.join(_PROFILES)}")


def all_profiles() -> list[Profile]:
    return list(_PROFILES.values())
