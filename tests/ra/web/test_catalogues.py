"""The pages' catalogues are complete and clean: every message of the templates and of
signserver/ra/web/*.py (extracted with Babel, as babel.cfg says) is translated in Traditional
Chinese and Portuguese, no catalogue holds a message nobody uses, translations keep their
placeholders, and the documents' wording is kept where they give it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

pytestmark = pytest.mark.one_store  # touches no store

ROOT = Path(__file__).resolve().parents[3]
WEB = "signserver/ra/web"
LOCALE = ROOT / WEB / "locale"
TRANSLATED = ("zh_Hant", "pt")  # English may leave msgstr empty: the msgid is the English text
LANGUAGES = (*TRANSLATED, "en")
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")

# The documents' wording (document 000 and its translations), kept word for word.
DOCUMENT_TEXTS = {
    "More than 5 times have been tried, please try again 30 minutes later.": {
        "zh_Hant": "已嘗試超過 5 次，請於 30 分鐘後再試。",
        "pt": "Foram feitas mais de 5 tentativas; tente novamente dentro de 30 minutos.",
    },
}


def _on_the_way_to_web(dirpath: str) -> bool:
    relative = os.path.relpath(dirpath, ROOT).replace(os.sep, "/")
    return relative == "." or WEB.startswith(relative) or relative.startswith(WEB)


@pytest.fixture(scope="module")
def extracted() -> dict[str, list[str]]:
    """Every message id (singular and plural) with the places that use it."""
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    messages: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, directory_filter=_on_the_way_to_web):
        for text in (message if isinstance(message, tuple) else (message,)):
            if text:
                messages.setdefault(text, []).append(f"{filename}:{lineno}")
    return messages


def _catalogues(folder: str) -> dict:
    catalogues = {}
    for path in sorted((LOCALE / folder / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            catalogues[path.stem] = read_po(handle, locale=folder, abort_invalid=True)
    return catalogues


def _entries(folder: str):
    """(domain, message) for every real entry of the language's catalogues."""
    for domain, catalogue in _catalogues(folder).items():
        for message in catalogue:
            if message.id:
                yield domain, message


def _ids(message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _strings(message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def test_the_pages_have_messages_to_translate(extracted):
    assert "%(service)s: certificate renewal, password change and certificate management." in extracted  # base.html
    assert "What you sent is too large." in extracted  # rendering.py, marked with N_


@pytest.mark.parametrize("folder", LANGUAGES)
def test_every_language_has_the_same_domains(folder):
    assert set(_catalogues(folder)) == set(_catalogues("zh_Hant")) and "common" in _catalogues(folder)


@pytest.mark.parametrize("folder", TRANSLATED)
def test_every_message_is_translated(folder, extracted):
    translated = set()
    for _domain, message in _entries(folder):
        if not message.fuzzy and all(_strings(message)):
            translated.update(_ids(message))
    missing = {text: places for text, places in extracted.items() if text not in translated}
    assert not missing, f"{len(missing)} messages without a {folder} translation (or fuzzy):\n" + "\n".join(
        f"  {text!r} ({', '.join(places[:2])})" for text, places in sorted(missing.items()))


@pytest.mark.parametrize("folder", LANGUAGES)
def test_no_catalogue_holds_a_message_nobody_uses(folder, extracted):
    unused = [f"{domain}.po: {text!r}" for domain, message in _entries(folder) for text in _ids(message)
              if text not in extracted]
    unused += [f"{domain}.po: {key!r} (marked obsolete, #~)" for domain, catalogue in _catalogues(folder).items()
               for key in catalogue.obsolete]
    assert not unused, f"{folder}: messages no template or page uses (remove them):\n  " + "\n  ".join(unused)


@pytest.mark.parametrize("folder", TRANSLATED)
def test_a_message_in_two_domains_has_one_translation(folder):
    seen: dict[str, tuple[str, tuple]] = {}
    clashes = []
    for domain, message in _entries(folder):
        key = _ids(message)[0]
        if key in seen and seen[key][1] != _strings(message):
            clashes.append(f"{key!r}: {seen[key][0]}.po and {domain}.po translate it differently")
        seen.setdefault(key, (domain, _strings(message)))
    assert not clashes, "\n".join(clashes)


@pytest.mark.parametrize("folder", LANGUAGES)
def test_translations_keep_the_placeholders(folder):
    """A singular translation has the msgid's placeholders; a plural form uses only the ids' ones
    (a language's singular form may leave out the number)."""
    wrong = []
    for domain, message in _entries(folder):
        wanted = set(PLACEHOLDER.findall(" ".join(_ids(message))))
        for text in filter(None, _strings(message)):
            used = set(PLACEHOLDER.findall(text))
            if used != wanted if not message.pluralizable else not used <= wanted:
                wrong.append(f"{domain}.po: {_ids(message)[0]!r} -> {text!r}")
    assert not wrong, "placeholders differ:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("folder", TRANSLATED)
def test_the_documents_wording_is_kept(folder, extracted):
    strings = {message.id: message.string for _domain, message in _entries(folder)}
    for text, wording in DOCUMENT_TEXTS.items():
        if text in extracted:
            assert strings.get(text) == wording[folder]


# One Traditional Chinese term for the revocation phrase, as the holder's pages say it: an
# operator reading the holder's words over the telephone must find the same ones on the screen.
REVOCATION_PHRASE_TERM = "撤銷短語"
OTHER_REVOCATION_PHRASE_TERMS = ("撤銷密語",)


def test_the_revocation_phrase_has_one_name_in_traditional_chinese():
    texts = [path for path in sorted((LOCALE / "zh_Hant" / "LC_MESSAGES").glob("*.po"))]
    texts += sorted((ROOT / WEB / "templates").rglob("*.html"))
    texts += sorted((ROOT / "signserver" / "ra").rglob("*.py"))  # the e-mails, the help codes' guidance
    seen, other = [], []
    for path in texts:
        content = path.read_text(encoding="utf-8")
        if REVOCATION_PHRASE_TERM in content:
            seen.append(path.name)
        other += [f"{path.relative_to(ROOT)}: {term}" for term in OTHER_REVOCATION_PHRASE_TERMS if term in content]
    assert seen and not other, other
