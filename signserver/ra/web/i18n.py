"""The pages' languages: the gettext catalogues under locale/<lang>/LC_MESSAGES/<domain>.po, merged
per language at start (one domain per group of pages: common, account, renewal, operator), the
request's language, and instants written in it.

Source texts (msgids) are English. Traditional Chinese is the default language; Portuguese and
English are offered. A language is chosen by the ``ra_lang`` cookie (the language switch), else by
the browser's Accept-Language, else the default."""

from __future__ import annotations

import datetime
import io
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

log = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).parent / "locale"
# The language tags of the pages (<html lang>, the cookie, the switch) and their catalogues' folders.
LANGUAGES: dict[str, str] = {"zh-Hant": "zh_Hant", "pt": "pt", "en": "en"}
DEFAULT_LANGUAGE = "zh-Hant"
LANGUAGE_NAMES = {"zh-Hant": "繁體中文", "pt": "Português", "en": "English"}
LANGUAGE_COOKIE = "ra_lang"
# The RA serves Macao: instants are shown in its zone whatever the browser's.
ZONE = ZoneInfo("Asia/Macau")
# Every Chinese tag (zh, zh-TW, zh-HK, zh-MO, zh-Hant-..., zh-CN too) gets Traditional Chinese, the
# only Chinese offered.
_ALIASES = {"zh": "zh_Hant", "zh_tw": "zh_Hant", "zh_hk": "zh_Hant", "zh_mo": "zh_Hant", "zh_hant": "zh_Hant",
            "zh_cn": "zh_Hant", "zh_sg": "zh_Hant", "zh_hans": "zh_Hant"}
MAX_ACCEPT_LANGUAGE = 512
MAX_LANGUAGE_RANGES = 20


def N_(message: str) -> str:
    """Marks a text for extraction where it is defined (a module constant); translated where shown."""
    return message


def load_catalogues(directory: Path = LOCALE_DIR) -> dict[str, NullTranslations]:
    """Every language's translations: its domains' .po files compiled in memory and merged.

    Raises: OSError or babel's errors for a catalogue that cannot be read (a packaging fault: the
    RA does not start).
    """
    catalogues: dict[str, NullTranslations] = {}
    for tag, folder in LANGUAGES.items():
        merged: NullTranslations = NullTranslations()
        for path in sorted((directory / folder / "LC_MESSAGES").glob("*.po")):
            with path.open("rb") as handle:
                catalogue = read_po(handle, locale=folder, domain=path.stem)
            compiled = io.BytesIO()
            write_mo(compiled, catalogue)  # untranslated entries fall back to the English msgid
            compiled.seek(0)
            translations = Translations(compiled, domain=path.stem)
            if isinstance(merged, Translations):
                merged.merge(translations)
            else:
                merged = translations
        catalogues[tag] = merged
    return catalogues


def language_ranges(header: str) -> list[str]:
    """The language ranges of an Accept-Language header, best first (q=0 left out); malformed parts
    are skipped, an overlong header read only in part."""
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(header[:MAX_ACCEPT_LANGUAGE].split(",")[:MAX_LANGUAGE_RANGES]):
        tag, _, parameters = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*" or not all(c.isascii() and (c.isalnum() or c == "-") for c in tag):
            continue
        quality = 1.0
        parameters = parameters.strip()
        if parameters.startswith("q="):
            try:
                quality = float(parameters[2:])
            except ValueError:
                continue
        if quality > 0:
            ranges.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranges)]


def negotiate(accept_language: str) -> str:
    """The page language for an Accept-Language header; the default when none is offered."""
    preferred = [tag.replace("-", "_") for tag in language_ranges(accept_language)]
    found = negotiate_locale(preferred, list(LANGUAGES.values()), sep="_", aliases=_ALIASES)
    for tag, folder in LANGUAGES.items():
        if found == folder:
            return tag
    return DEFAULT_LANGUAGE


def choose_language(cookie: str | None, accept_language: str) -> str:
    """The cookie's language when it names one offered, else the negotiated one."""
    if cookie in LANGUAGES:
        return cookie
    return negotiate(accept_language)


def babel_locale(language: str) -> Locale:
    return Locale.parse(LANGUAGES.get(language, LANGUAGES[DEFAULT_LANGUAGE]))


def format_moment(moment: datetime.datetime | int | None, language: str, format: str = "medium") -> str:
    """``moment`` (a datetime, or whole seconds since 1970 as the store keeps them) in the RA's
    zone, written the language's way ("" for None; a naive datetime is UTC). ``format``: Babel's
    "short", "medium", "long", "full" or a pattern."""
    if moment is None:
        return ""
    if isinstance(moment, int):
        moment = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return format_datetime(moment, format=format, tzinfo=ZONE, locale=babel_locale(language))
