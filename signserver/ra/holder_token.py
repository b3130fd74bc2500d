"""The holder's token: the key of a renewal's holder calls, 256 random bits e-mailed in the renewal
notice. The RA keeps only its SHA-256, so neither its database nor an operator can use it; the
renewal id alone opens nothing."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32


def new_token() -> tuple[str, str]:
    """A new token (for the notice e-mail, never stored or logged) and its hash (to store)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def matches(token: str, stored_hash: str) -> bool:
    """Whether ``token`` is the one whose hash is stored (False when none is)."""
    return bool(stored_hash) and hmac.compare_digest(token_hash(token), stored_hash)
