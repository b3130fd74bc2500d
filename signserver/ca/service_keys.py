"""Which key algorithm the delegated OCSP responder and the time-stamping authority get.

Set by ``ca.ocsp_key_algorithm`` and ``ca.tsa_key_algorithm``: ``auto`` (the default) takes the
first of SERVICE_KEY_PREFERENCES the token can generate and sign with, so that the server starts
on an RSA-only token; a named algorithm the token cannot use stops the start with an error naming
the setting. What each key signs with follows the key itself (its certificate), never this table,
so keys made under an earlier choice keep working.
"""

from __future__ import annotations

from signserver.config import CaConfig
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.capabilities import TokenCapabilities

# Best first: P-256 signs fastest and keeps responses and time stamps small; RSA-3072 where the
# token has no EC (its strength matches P-256's for longer than RSA-2048's), RSA-2048 last.
SERVICE_KEY_PREFERENCES = (KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_3072, KeyAlgorithm.RSA_2048)
# What may be named: CMS time stamps and OCSP responses are read by clients that know RSA and
# ECDSA; Ed25519 is not taken.
SERVICE_KEY_ALGORITHMS = (KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_2048,
                          KeyAlgorithm.RSA_3072, KeyAlgorithm.RSA_4096)
SERVICE_KEY_SETTINGS = {"ocsp-responder": "ca.ocsp_key_algorithm", "tsa": "ca.tsa_key_algorithm"}


def service_key_algorithm(role: str, config: CaConfig, capabilities: TokenCapabilities) -> KeyAlgorithm:
    """The algorithm of a new key for ``role`` (``ocsp-responder`` or ``tsa``) on this token.

    Raises: ConfigurationError: naming the setting, when the token cannot use what it asks for.
    """
    setting = SERVICE_KEY_SETTINGS[role]
    value = config.ocsp_key_algorithm if role == "ocsp-responder" else config.tsa_key_algorithm
    return capabilities.key_algorithm_setting(value, SERVICE_KEY_PREFERENCES, setting, SERVICE_KEY_ALGORITHMS)
