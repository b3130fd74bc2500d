"""The names the RA shows for the certification service provider that deploys it: the service's
name (the pages' header and title, the e-mails) and the provider's (whom the holder applies to and
contacts, in the declarations and the help codes' guidance). Both are settings (ra.service_name,
ra.provider_name); an empty one means the neutral default of each language, a set one is used as
given in every language."""

from __future__ import annotations

DEFAULT_LANGUAGE = "zh-Hant"

DEFAULT_SERVICE_NAMES = {
    "zh-Hant": "電子證書服務",
    "pt": "Serviços de certificados electrónicos",
    "en": "Electronic certificate services",
}
# Written to stand inside a sentence ("contact %(provider)s", "contacte %(provider)s").
DEFAULT_PROVIDER_NAMES = {
    "zh-Hant": "註冊署",
    "pt": "a entidade de registo",
    "en": "the registration authority",
}


def _resolved(configured: str, defaults: dict[str, str], language: str) -> str:
    configured = configured.strip()
    if configured:
        return configured
    return defaults.get(language) or defaults[DEFAULT_LANGUAGE]


def service_name(configured: str, language: str) -> str:
    """The service's name in ``language`` ("zh-Hant", "pt", "en"; Traditional Chinese for another):
    ``configured`` (the setting ra.service_name) when set, else the language's default."""
    return _resolved(configured, DEFAULT_SERVICE_NAMES, language)


def provider_name(configured: str, language: str) -> str:
    """The provider's name in ``language`` ("zh-Hant", "pt", "en"; Traditional Chinese for another):
    ``configured`` (the setting ra.provider_name) when set, else the language's default."""
    return _resolved(configured, DEFAULT_PROVIDER_NAMES, language)


def service_names(configured: str) -> str:
    """The service's name for a text in every language (the e-mails): the set name, or the three
    defaults side by side."""
    if configured.strip():
        return configured.strip()
    return " / ".join(DEFAULT_SERVICE_NAMES.values())
