"""The help codes of the documents' renewal refusals, with their guidance in Traditional Chinese,
Portuguese and English (the holder's page shows the one of the holder's language)."""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = ("zh-Hant", "pt", "en")
DEFAULT_LANGUAGE = "zh-Hant"

ONLY_IN_PERSON = "AC-AB-0007"
IDENTITY_DATA_CHANGED = "AC-AB-0014"
REVOKE_FIRST = "AC-AB-0015"


@dataclass(frozen=True)
class HelpCode:
    code: str
    guidance: dict[str, str]

    def text(self, language: str = DEFAULT_LANGUAGE) -> str:
        """The guidance in ``language`` (Traditional Chinese for one not offered), with the code."""
        return f"{self.guidance.get(language, self.guidance[DEFAULT_LANGUAGE])} ({self.code})"


HELP_CODES: dict[str, HelpCode] = {
    ONLY_IN_PERSON: HelpCode(ONLY_IN_PERSON, {
        "zh-Hant": "已完成線上遞交非“雲簽”證書申請，後續證書簽發事宜須線下進行。請聯繫eSignTrust預約線下辦理。",
        "pt": "O pedido de certificado que não é de \"assinatura na nuvem\" foi submetido online; a emissão "
              "do certificado é feita presencialmente. Contacte a eSignTrust para marcar atendimento.",
        "en": "The application for a certificate other than a cloud-signature one has been submitted online; "
              "the certificate is issued in person. Contact eSignTrust to book an appointment.",
    }),
    IDENTITY_DATA_CHANGED: HelpCode(IDENTITY_DATA_CHANGED, {
        "zh-Hant": "檢查到台端證書登記之身份證明文件已失效或登記之個人資料與經授權擷取之身份證明文件資料有異，"
                   "請退回並重新進行身份鑑別。如有疑問，請聯繫 eSignTrust 協助。",
        "pt": "O documento de identificação registado no certificado caducou ou os dados pessoais registados "
              "diferem dos dados do documento obtidos com a sua autorização. Volte atrás e verifique a "
              "identidade de novo; foi-lhe enviado um e-mail. Em caso de dúvida, contacte a eSignTrust.",
        "en": "The identity document registered for your certificate has expired, or the registered personal "
              "data differ from the identity document's data fetched with your consent. Go back and verify "
              "your identity again; an e-mail has been sent to you. For help, contact eSignTrust.",
    }),
    REVOKE_FIRST: HelpCode(REVOKE_FIRST, {
        "zh-Hant": "因台端所申請續期之證書涉及證書資料變更，請先撤銷原證書後重做證書激活程序。如有疑問，請聯繫eSignTrust協助。",
        "pt": "Os dados do certificado a renovar mudaram: revogue primeiro o certificado original e repita "
              "a activação. Em caso de dúvida, contacte a eSignTrust.",
        "en": "The data of the certificate being renewed have changed: revoke the original certificate first, "
              "then activate again. For help, contact eSignTrust.",
    }),
}


# For a code the table does not hold (one the core names that the documents do not): the holder is
# still told something useful, with the code to quote.
GENERIC_GUIDANCE = {
    "zh-Hant": "證書續期未能完成。請聯繫eSignTrust協助，並提供此代碼。",
    "pt": "A renovação do certificado não pôde ser concluída. Contacte a eSignTrust e indique este código.",
    "en": "The certificate renewal could not be completed. Contact eSignTrust and quote this code.",
}


def help_code(code: str) -> HelpCode:
    """The help code ``code`` with its guidance; a code the table does not hold gets the generic
    guidance (contact eSignTrust, quoting the code)."""
    return HELP_CODES.get(code) or HelpCode(code, GENERIC_GUIDANCE)
