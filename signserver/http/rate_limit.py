"""A token bucket per client address: how often one client may ask for costly work."""

from __future__ import annotations

import ipaddress
import threading

from signserver.clock import Clock

MAX_CLIENTS = 100_000  # buckets kept; beyond, the least recently used are forgotten


def client_key(address: str) -> str:
    """The key a client is limited under: its IPv4 address, or the /64 network of its IPv6
    address (one host is given a whole /64, so it could otherwise take a new address per request)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class TokenBuckets:
    """``rate`` requests a second per client on average, and up to ``burst`` at once after a quiet
    spell. Thread-safe; the time comes from ``clock``."""

    def __init__(self, rate: float, burst: int, clock: Clock, max_clients: int = MAX_CLIENTS):
        if rate <= 0 or burst < 1:
            raise ValueError("the rate must be positive and the burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted), oldest use first
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take one token for ``client`` (an IP address). Returns 0.0 when granted, else how many
        seconds until a token is free (nothing is taken then)."""
        key = client_key(client)
        now = self._clock.now().timestamp()
        with self._lock:
            tokens, counted = self._buckets.pop(key, (self._burst, now))
            # max(): a clock set back must not drain the bucket.
            tokens = min(self._burst, tokens + max(0.0, now - counted) * self._rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self._rate
            self._buckets[key] = (tokens, now)  # re-inserted: the dict stays in order of last use
            if len(self._buckets) > self._max_clients:
                # A forgotten client starts again with a full bucket; only the least recently
                # seen are forgotten, so a client being limited now stays limited.
                del self._buckets[next(iter(self._buckets))]
            return wait
