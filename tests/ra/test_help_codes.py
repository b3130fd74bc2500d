"""The documents' help codes, each with guidance in Traditional Chinese, Portuguese and English."""

from __future__ import annotations

import pytest

from signserver.ra.help_codes import HELP_CODES, LANGUAGES, guidance, help_code


def test_the_three_codes_of_the_documents():
    assert set(HELP_CODES) == {"AC-AB-0007", "AC-AB-0014", "AC-AB-0015"}


@pytest.mark.parametrize("code", sorted(HELP_CODES))
def test_each_code_has_guidance_in_every_language(code):
    guidance = help_code(code).guidance
    assert set(guidance) == set(LANGUAGES) and all(text.strip() for text in guidance.values())
    assert len({guidance[language] for language in LANGUAGES}) == 3


def test_the_guidance_follows_the_documents():
    assert "預約線下辦理" in help_code("AC-AB-0007").text("zh-Hant")
    assert "重新進行身份鑑別" in help_code("AC-AB-0014").text()
    assert "請先撤銷原證書" in help_code("AC-AB-0015").text() and help_code("AC-AB-0015").text().endswith("(AC-AB-0015)")
    assert "revoke" in help_code("AC-AB-0015").text("en") and "revogue" in help_code("AC-AB-0015").text("pt")
    assert help_code("AC-AB-0007").text("fr") == help_code("AC-AB-0007").text("zh-Hant")


def test_a_code_outside_the_table_gets_generic_guidance():
    unknown = help_code("AC-AB-0099")
    assert set(unknown.guidance) == set(LANGUAGES) and "the registration authority" in unknown.text("en")
    assert unknown.text().endswith("(AC-AB-0099)")


@pytest.mark.parametrize("code", [*sorted(HELP_CODES), "AC-AB-0099"])
def test_the_guidance_names_the_configured_provider_in_every_language(code):
    for language in LANGUAGES:
        assert "Example Trust Services" in guidance(code, language, "Example Trust Services")
        assert "Example Trust Services" in help_code(code).text(language, "Example Trust Services")
    assert set(help_code(code).guidance_by_language("Example Trust Services").values()) == {
        guidance(code, language, "Example Trust Services") for language in LANGUAGES}


@pytest.mark.parametrize("code", [*sorted(HELP_CODES), "AC-AB-0099"])
def test_by_default_the_guidance_names_no_real_provider_but_the_languages_default(code):
    defaults = {"zh-Hant": "註冊署", "pt": "a entidade de registo", "en": "the registration authority"}
    for language in LANGUAGES:
        text = help_code(code).text(language)
        assert defaults[language] in text and "%(" not in text
        assert not any(name in text for name in ("eSignTrust", "郵電", "Correios"))
