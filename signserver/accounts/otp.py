"""Time-based one-time passwords (RFC 6238: SHA-1, 6 digits, 30-second steps)."""

from __future__ import annotations

import datetime
import hmac
import io

import pyotp

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # one step either way is accepted, for clocks slightly off
ISSUER = "signserver"


def new_seed() -> str:
    """A random 160-bit seed, base32 (what authenticator apps expect)."""
    return pyotp.random_base32(32)


def provisioning_uri(seed: str, username: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(seed, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=username,
                                                                                  issuer_name=issuer)


def well_formed(code: str) -> bool:
    """Six ASCII digits. ``str.isdigit`` alone would also accept Arabic-Indic, full-width or
    superscript digits, which no authenticator app shows and ``hmac.compare_digest`` refuses."""
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(seed: str, code: str, now: datetime.datetime) -> int | None:
    """The time step whose code equals ``code`` (current step, or one either side), else None.

    Any other text (not six ASCII digits) is simply a wrong code. The caller records the step so
    that each code is accepted at most once.
    """
    formed = well_formed(code)
    candidate = code.encode("ascii") if formed else b""
    totp = pyotp.TOTP(seed, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now.timestamp()) // STEP_SECONDS
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Every candidate is computed and compared (no early exit), in constant time, whatever
        # the code looks like.
        if hmac.compare_digest(totp.generate_otp(step).encode("ascii"), candidate) and formed:
            found = step
    return found


def code_at(seed: str, moment: datetime.datetime) -> str:
    """The code an authenticator app shows at ``moment`` (for tests and demonstrations)."""
    return pyotp.TOTP(seed, digits=DIGITS, interval=STEP_SECONDS).at(moment)


def qr_png(uri: str) -> bytes:
    """The URI as a PNG QR code."""
    import qrcode.image.pure  # only enrolment draws codes; server workers need not carry it

    image = qrcode.make(uri, image_factory=qrcode.image.pure.PyPNGImage)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def qr_terminal(uri: str) -> str:
    """The URI as a QR code drawn with block characters, for a terminal."""
    import qrcode

    code = qrcode.QRCode(border=2)
    code.add_data(uri)
    buffer = io.StringIO()
    code.print_ascii(out=buffer, invert=True)
    return buffer.getvalue()
