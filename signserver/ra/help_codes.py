"""The help codes of the documents' renewal refusals, with their guidance in Traditional Chinese,
Portuguese and English (the holder's page shows the one of the holder's language). The guidance
names the provider to contact as ``%(provider)s``: the setting ra.provider_name, or the language's
default (signserver/ra/branding.py)."""

from __future__ import annotations

from dataclasses import dataclass

from signserver.ra.branding import provider_name

LANGUAGES = ("zh-Hant", "pt", "en")
DEFAULT_LANGUAGE = "zh-Hant"

ONLY_IN_PERSON = "AC-AB-0007"
IDENTITY_DATA_CHANGED = "AC-AB-0014"
REVOKE_FIRST = "AC-AB-0015"


@dataclass(frozen=True)
class HelpCode:
    code: str
    templates: dict[str, str]  # the guidance per language, naming the provider as %(provider)s

    def text(self, language: str = DEFAULT_LANGUAGE, provider: str = "") -> str:
        """The guidance in ``language`` (Traditional Chinese for one not offered), with the code;
        ``provider``: the setting ra.provider_name ("" for the language's default)."""
        return f"{self.guidance_in(language, provider)} ({self.code})"

    def guidance_in(self, language: str, provider: str = "") -> str:
        """The guidance in ``language`` (Traditional Chinese for one not offered), without the code;
        ``provider``: the setting ra.provider_name ("" for the language's default)."""
        if language not in self.templates:
            language = DEFAULT_LANGUAGE
        return self.templates[language] % {"provider": provider_name(provider, language)}

    def guidance_by_language(self, provider: str = "") -> dict[str, str]:
        """The guidance in every language (the JSON API and the CLI show all three)."""
        return {language: self.guidance_in(language, provider) for language in self.templates}

    @property
    def guidance(self) -> dict[str, str]:
        """The guidance in every language, naming the default provider of each."""
        return self.guidance_by_language()


HELP_CODES: dict[str, HelpCode] = {
    ONLY_IN_PERSON: HelpCode(ONLY_IN_PERSON, {
        "zh-Hant": "已完成線上遞交非“雲簽”證書申請，後續證書簽發事宜須線下進行。請聯繫%(provider)s預約線下辦理。",
        "pt": "O pedido de certificado que não é de \"assinatura na nuvem\" foi submetido online; a emissão "
              "do certificado é feita presencialmente. Contacte %(provider)s para marcar atendimento.",
        "en": "The application for a certificate other than a cloud-signature one has been submitted online; "
              "the certificate is issued in person. Contact %(provider)s to book an appointment.",
    }),
    IDENTITY_DATA_CHANGED: HelpCode(IDENTITY_DATA_CHANGED, {
        "zh-Hant": "檢查到台端證書登記之身份證明文件已失效或登記之個人資料與經授權擷取之身份證明文件資料有異，"
                   "請退回並重新進行身份鑑別。如有疑問，請聯繫%(provider)s協助。",
        "pt": "O documento de identificação registado no certificado caducou ou os dados pessoais registados "
              "diferem dos dados do documento obtidos com a sua autorização. Volte atrás e verifique a "
              "identidade de novo; foi-lhe enviado um e-mail. Em caso de dúvida, contacte %(provider)s.",
        "en": "The identity document registered for your certificate has expired, or the registered personal "
              "data differ from the identity document's data fetched with your consent. Go back and verify "
              "your identity again; an e-mail has been sent to you. For help, contact %(provider)s.",
    }),
    REVOKE_FIRST: HelpCode(REVOKE_FIRST, {
        "zh-Hant": "因台端所申請續期之證書涉及證書資料變更，請先撤銷原證書後重做證書激活程序。如有疑問，請聯繫%(provider)s協助。",
        "pt": "Os dados do certificado a renovar mudaram: revogue primeiro o certificado original e repita "
              "a activação. Em caso de dúvida, contacte %(provider)s.",
        "en": "The data of the certificate being renewed have changed: revoke the original certificate first, "
              "then activate again. For help, contact %(provider)s.",
    }),
}


# For a code the table does not hold (one the core names that the documents do not): the holder is
# still told something useful, with the code to quote.
GENERIC_GUIDANCE = {
    "zh-Hant": "證書續期未能完成。請聯繫%(provider)s協助，並提供此代碼。",
    "pt": "A renovação do certificado não pôde ser concluída. Contacte %(provider)s e indique este código.",
    "en": "The certificate renewal could not be completed. Contact %(provider)s and quote this code.",
}


def help_code(code: str) -> HelpCode:
    """The help code ``code`` with its guidance; a code the table does not hold gets the generic
    guidance (contact the provider, quoting the code)."""
    return HELP_CODES.get(code) or HelpCode(code, GENERIC_GUIDANCE)


def guidance(code: str, language: str, provider: str = "") -> str:
    """The guidance of help code ``code`` in ``language`` ("zh-Hant", "pt" or "en"; Traditional
    Chinese for another), without the code itself, naming ``provider`` (the setting
    ra.provider_name; "" for the language's default): the one lookup every page uses."""
    return help_code(code).guidance_in(language, provider)
