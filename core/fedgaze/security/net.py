"""Which addresses are this machine's loopback: the one place plaintext services may listen."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc


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


def serve_local_grpc(
    name: str,
    address: str,
    register: Callable[[grpc.Server], None],
    *,
    certificate: bytes | None,
    private_key: bytes | None,
    workers: int,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> tuple[grpc.Server, int]:
    """Start a gRPC server for service ``name`` on ``address`` (``host:port``, IPv6 in
    brackets; port 0 picks one) and return it with its port.

    ``register`` adds the servicer. ``certificate`` and ``private_key`` are PEM bytes for TLS,
    both or neither; without them only a loopback address is accepted (ValueError otherwise),
    because what our services carry (ledgers, samples) is not for the network in plaintext.
    ``interceptors`` see every call first (e.g. to check a credential in its metadata).
    """
    if (certificate is None) != (private_key is None):
        raise ValueError(
            "TLS needs both a certificate and a key: pass both a certificate and a private key, "
            "or neither"
        )
    if certificate is None and not is_loopback(address):
        raise ValueError(
            f"refusing to serve the {name} service on {address} without TLS: "
            "pass a certificate and private key, or bind to 127.0.0.1 / [::1]"
        )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), interceptors=list(interceptors)
    )
    register(server)
    if certificate is not None and private_key is not None:
        creds = grpc.ssl_server_credentials([(private_key, certificate)])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind the {name} service to {address}")
    server.start()
    return server, port
