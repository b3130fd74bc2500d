"""The operators' listings of the core's certificates (the search's, the dashboard's certificates
due), shown a page of the core's at a time: every account's certificates are a million at a
national scale, too many for one request's memory or one HTML page. A page links to the next with
the core's page token (AIP-158) and the listing's filters, which the token is bound to; the
token is forward-only, so a later page links back to the first."""

from __future__ import annotations

from urllib.parse import urlencode

from signserver.ra.errors import OperationRefused
from signserver.ra.web.forms import BadForm, clean_text

# Certificates a page of a listing shows: one page of the core's, read whole before it is shown.
PAGE_SIZE = 50
PAGE_PARAMETER = "page"
# The core's tokens are about 120 characters and it refuses any over 512: a longer one is no token.
MAX_PAGE_TOKEN = 512


def page_token(value: str) -> str:
    """The page token a listing's link carries ("" for the first page).

    Raises: OperationRefused ("page_token_not_valid"): it cannot be one of the core's (too long,
    not text): the link was changed."""
    try:
        return clean_text(value, max_length=MAX_PAGE_TOKEN)
    except BadForm:
        raise OperationRefused("the page token is not one the core gives", reason="page_token_not_valid") from None


def page_link(path: str, filters: dict[str, str], token: str = "", fragment: str = "") -> str:
    """The address of the listing's page that ``token`` names (the first for ""), with its filters
    in the query as the page's form sends them, and ``fragment`` (the listing's section)."""
    query = {**filters, **({PAGE_PARAMETER: token} if token else {})}
    return (f"{path}?{urlencode(query)}" if query else path) + (f"#{fragment}" if fragment else "")
