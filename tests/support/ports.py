"""Free ports for the listeners tests start (brokers, web views, metrics).

They are taken below the kernel's ephemeral range: a client retrying a stopped listener on a port
inside that range can be handed that very port for its own end (a TCP self-connect), and the
listener's restart then fails with "Address already in use"."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 12000


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_block(size: int = 1) -> int:
    """A port P with P..P+size-1 free, all below the ephemeral range."""
    top = max(_ephemeral_floor() - size, LOWEST + 1)
    for _ in range(500):
        base = random.randrange(LOWEST, top)
        if all(_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of ports below the ephemeral range")


def free_port() -> int:
    return free_block(1)
