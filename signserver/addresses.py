"""Network addresses as the settings give them: ``host:port`` and whether a host is loopback.
Shared by the core's configuration and the RA's settings (which may not import the core's)."""

from __future__ import annotations

import ipaddress


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into host and port (0: any free port).

    Raises:
        ValueError: the address is not of that form or the port is out of range.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("expected HOST:PORT, for example 127.0.0.1:50051 or [::1]:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host, port


def join_address(host: str, port: int) -> str:
    """``host:port``, ``[v6]:port`` for an IPv6 host: what :func:`split_address` splits."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
