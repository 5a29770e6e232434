"""``fedgaze certs``: a CA, a SuperLink TLS certificate and SuperNode auth keys."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from fedgaze.argtypes import positive_int


def add_parsers(sub: Any) -> None:
    """Add ``certs`` to the ``fedgaze`` subparsers ``sub``."""
    certs = sub.add_parser(
        "certs", help="create a CA, a SuperLink TLS certificate and SuperNode auth keys"
    )
    certs.add_argument("--out", type=Path, required=True, help="directory to write (new)")
    who = certs.add_mutually_exclusive_group()
    who.add_argument(
        "--devices", type=positive_int, default=None, help="device-000..N-1 key pairs (1)"
    )
    who.add_argument("--device-ids", help="comma-separated device ids, one key pair each")
    certs.add_argument(
        "--server-names",
        default="127.0.0.1,::1,localhost",
        help="SuperLink certificate SANs: IPs or DNS names (127.0.0.1,::1,localhost)",
    )
    certs.set_defaults(handler=_cmd_certs)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_certs(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.security.certs import provision_credentials

    if args.device_ids:
        ids = _split(args.device_ids)
    else:
        ids = [f"device-{i:03d}" for i in range(args.devices or 1)]
    names = _split(args.server_names)
    if not names:
        raise ValueError("--server-names needs at least one name")
    if args.out.exists() and any(args.out.iterdir()):
        raise ValueError(f"{args.out} is not empty; choose a new directory")
    paths = provision_credentials(args.out, ids, names)
    console.print(
        f"CA {paths.ca_cert}, SuperLink certificate {paths.server_cert} "
        f"(names: {', '.join(names)}), key {paths.server_key}; "
        f"{len(ids)} device key pairs under {paths.directory / 'devices'}; "
        f"public keys listed in {paths.authorized}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        "SuperLink: --ssl-certfile server.pem --ssl-keyfile server.key --ssl-ca-certfile ca.pem "
        "--enable-supernode-auth; register each device: flwr supernode register "
        "devices/<id>.pub; SuperNode: --root-certificates ca.pem "
        "--auth-supernode-private-key devices/<id>.key",
        soft_wrap=True,
        highlight=False,
    )
    return 0
