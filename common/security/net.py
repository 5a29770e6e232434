"""Which addresses are this machine's loopback: the one place plaintext services may listen."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (a name or an IP, IPv6 with or without brackets) is loopback."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback(address: str) -> bool:
    """True when ``host:port`` (IPv6 in brackets) names this machine's loopback interface."""
    return is_loopback_host(address.rsplit(":", 1)[0])
