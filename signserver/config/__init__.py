"""Configuration: one TOML file plus ``SIGNSERVER_*`` environment overrides.

Every key has an embedded default, so a checkout runs with no file at all: a SoftHSM token and
the server's files under ``./var``. The environment overrides the file: ``SIGNSERVER_STATE_DIR``
for the top-level ``state_dir`` and ``SIGNSERVER_<SECTION>_<KEY>`` for the others (for example
``SIGNSERVER_SERVER_LISTEN``). Secrets never live in the file: the token's user PIN comes from
``SIGNSERVER_HSM_USER_PIN`` or from the file named by ``hsm.user_pin_file``.

The package's parts: ``sections`` (what the server is configured with), ``values`` (how a setting's
text is parsed and checked) and ``loading`` (the file, the environment and the defaults).
"""

from signserver.config.loading import (CONFIG_ENV, DEFAULT_CONFIG_FILE, SOFTHSM_MODULE_CANDIDATES, env_name,
                                       load_config)
from signserver.config.sections import (DEFAULT_POLICY_OID_ARC, USER_PIN_ENV, AccountsConfig, AuditConfig,
                                        AuthorizationConfig, CaConfig, Config, CscConfig, DatabaseConfig,
                                        HsmConfig, HttpConfig, LoggingConfig, MetricsConfig, PadesConfig,
                                        RetentionConfig, ServerConfig, SmtpConfig, TlsConfig)
from signserver.config.values import MAX_OID_ARC, read_secret_file

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG_FILE", "DEFAULT_POLICY_OID_ARC", "MAX_OID_ARC", "SOFTHSM_MODULE_CANDIDATES",
    "USER_PIN_ENV", "AccountsConfig", "AuditConfig", "AuthorizationConfig", "CaConfig", "Config", "CscConfig",
    "DatabaseConfig", "HsmConfig", "HttpConfig", "LoggingConfig", "MetricsConfig", "PadesConfig",
    "RetentionConfig", "ServerConfig", "SmtpConfig", "TlsConfig", "env_name", "load_config", "read_secret_file",
]
