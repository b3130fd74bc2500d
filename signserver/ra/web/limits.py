"""Rate limits of the pages' forms: attempts per client address and per account in a sliding
window of 10 minutes.

An address is counted per form and, across all forms, against a budget of ALL_FORMS_FACTOR
forms' worth, so that spreading attempts over the forms does not multiply them. An IPv6 client is
counted by its /64 network: one subscriber commonly holds a whole /64, any address of it.

The windows are kept in memory: they hold for one RA process (the RA runs as one), and start
again empty when it restarts. The core keeps its own lockout (5 wrong passwords lock an account
for 30 minutes); these limits keep guessing and mail-bombing off the RA's forms before that."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from typing import Callable

from starlette.requests import Request

from signserver.ra.errors import RaError
from signserver.ra.settings import RaSettings

WINDOW_SECONDS = 600
ALL_FORMS = "*"  # the key of the budget an address spends on every form
ALL_FORMS_FACTOR = 3  # that budget: as many attempts as at three forms
IPV6_PREFIX = 64
MAX_KEYS = 100_000  # past it the oldest windows are dropped: memory stays bounded under a flood


class RateLimited(RaError):
    """Too many attempts at a form; ``retry_after`` seconds until the next one is allowed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


def client_address(request: Request) -> str:
    """The connecting client's address (the RA is reached directly, not behind a proxy)."""
    return request.client.host if request.client else "unknown"


def address_key(address: str) -> str:
    """What an address is counted as: an IPv4 address itself; an IPv6 address as its /64 (an
    IPv4-mapped one as the IPv4 address); anything else as given."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


class RateLimits:
    """Sliding windows keyed by (form, address), (every form, address) and (form, account)."""

    def __init__(self, settings: RaSettings, monotonic: Callable[[], float] = time.monotonic):
        self._per_address = settings.web_attempts_per_address
        self._per_account = settings.web_attempts_per_account
        self._monotonic = monotonic
        self._windows: dict[tuple[str, str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, request: Request, form: str, account: str = "") -> None:
        """Count an attempt at ``form`` from the request's address (and for ``account`` when given).

        Raises: RateLimited: past the attempts allowed in the window for either (the attempt is
        then not counted).
        """
        address = address_key(client_address(request))
        keys = [(("address", form, address), self._per_address),
                (("address", ALL_FORMS, address), self._per_address * ALL_FORMS_FACTOR)]
        if account:
            keys.append((("account", form, account.strip().lower()), self._per_account))
        self._count(keys)

    def check_account(self, request: Request, form: str, account: str) -> None:
        """Count an attempt at ``form`` for ``account`` alone, the address having been counted by
        check(request, form): for a form that names the account only once its captcha passed, so
        that anyone's junk naming an account does not use up its holder's attempts.

        Raises: RateLimited: past the attempts allowed for the account (then not counted).
        """
        self._count([(("account", form, account.strip().lower()), self._per_account)])

    def _count(self, keys: list) -> None:
        """Count an attempt under every key, or under none when one is past its allowance.

        Raises: RateLimited."""
        now = self._monotonic()
        with self._lock:
            waits = []
            for key, allowed in keys:
                window = self._windows.get(key)
                if window is None:
                    continue
                while window and window[0] <= now - WINDOW_SECONDS:
                    window.popleft()
                if len(window) >= allowed:
                    waits.append(window[0] + WINDOW_SECONDS - now)
            if waits:
                raise RateLimited("too many attempts; try again later", math.ceil(max(waits)))
            for key, _ in keys:
                self._windows.setdefault(key, deque()).append(now)
            if len(self._windows) > MAX_KEYS:
                self._drop_oldest(now)

    def _drop_oldest(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if not w or w[-1] <= now - WINDOW_SECONDS]:
            del self._windows[key]
        while len(self._windows) > MAX_KEYS:
            del self._windows[next(iter(self._windows))]
