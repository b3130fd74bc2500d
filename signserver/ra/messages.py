"""The e-mails the RA sends, in Traditional Chinese, Portuguese and English like the documents'."""

from __future__ import annotations

import datetime

from signserver.ra import branding

DISPLAY_ZONE = datetime.timezone(datetime.timedelta(hours=8))  # Macau time, as the documents show


def signed_off(body: str, service_name: str = "") -> str:
    """``body`` with the service's name under it, after the signature separator; ``service_name``:
    the setting ra.service_name (the three languages' default names when empty)."""
    return f"{body.rstrip()}\n\n-- \n{branding.service_names(service_name)}\n"


def sender_name(service_name: str = "") -> str:
    """The name the e-mails come from: the service's (ra.service_name, or the defaults)."""
    return branding.service_names(service_name)


def day(moment: datetime.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(DISPLAY_ZONE).strftime("%d/%m/%Y")


def renewal_notice(renewal_id: str, token: str, serial: str, profile: str,
                   expires: datetime.datetime, *, public_url: str) -> tuple[str, str]:
    """The notice, with the holder's token: the key of the holder's renewal steps (keep it to
    yourself), as the link to the RA's pages (``public_url``: their address, RaSettings.pages_url;
    a single-use link, with an e-mail code) and as the access key of the RA's JSON API."""
    subject = "電子證書續期通知 Aviso de renovação do certificado Certificate renewal notice"
    link = (f"請透過以下連結登入 / Entre pela ligação / Sign in through this link:\n"
            f"{public_url.rstrip('/')}/notice/{renewal_id}/{token}\n")
    body = (link +
            f"續期編號 / Número da renovação / Renewal: {renewal_id}\n"
            f"存取密鑰 / Chave de acesso / Access key: {token}\n"
            f"有效期至 / válida até / valid until {day(expires)}；請勿轉交他人 / não a partilhe / do not share it\n"
            f"證書 {serial}（{profile}）將於 {day(expires)} 到期，請登入進行身份鑑別及證書續期。\n"
            f"O certificado {serial} ({profile}) expira em {day(expires)}: verifique a identidade para o renovar.\n"
            f"Certificate {serial} ({profile}) expires on {day(expires)}: verify your identity to renew it.\n")
    return subject, body


def verification_code(code: str, minutes: int) -> tuple[str, str]:
    subject = "電郵驗證碼 Código de verificação Verification code"
    body = (f"驗證碼：{code}（{minutes} 分鐘內有效）\n"
            f"Código de verificação: {code} (válido durante {minutes} minutos)\n"
            f"Verification code: {code} (valid for {minutes} minutes)\n")
    return subject, body


def sign_in_code(code: str, minutes: int) -> tuple[str, str]:
    """The code that signs a holder in through the notice's link."""
    subject = "登入驗證碼 Código de entrada Sign-in code"
    body = (f"登入驗證碼：{code}（{minutes} 分鐘內有效）。如非閣下本人操作，請勿理會此郵件。\n"
            f"Código de entrada: {code} (válido durante {minutes} minutos). "
            "Se não o pediu, ignore esta mensagem.\n"
            f"Sign-in code: {code} (valid for {minutes} minutes). If you did not ask for it, ignore this message.\n")
    return subject, body


def verify_again(serial: str, profile: str, expires: datetime.datetime) -> tuple[str, str]:
    subject = "《需重新認證進行身份鑑別》通知 Aviso: nova verificação de identidade Notice: verify your identity again"
    body = (f"閣下就電子證書 {serial}（{profile}，{day(expires)} 到期）進行證書激活時，系統檢測到閣下之最新個人身份證資料"
            f"有變或已失效，請重新進行身份鑑別。(AC-AB-0014)\n"
            f"Os dados do seu documento de identificação mudaram ou caducaram: verifique a identidade de novo "
            f"para renovar o certificado {serial}. (AC-AB-0014)\n"
            f"Your identity document's data changed or expired: verify your identity again to renew "
            f"certificate {serial}. (AC-AB-0014)\n")
    return subject, body


def activated(old_serial: str, old_expires: datetime.datetime, new_serial: str,
              new_expires: datetime.datetime | None) -> tuple[str, str]:
    subject = "電子證書已激活 Certificado activado Certificate activated"
    body = ("原證書序號 / Certificado original / Original certificate: "
            f"{old_serial}, 到期日 / expira / expires {day(old_expires)}\n"
            "新證書序號 / Certificado novo / New certificate: "
            f"{new_serial}, 到期日 / expira / expires {day(new_expires)}\n")
    return subject, body
