"""Free TCP ports on one exact loopback address.

Each simulated server listens on its own 127.0.0.N, so a port is picked by
binding on that exact address: a wildcard listener elsewhere on the machine
blocks per-address binds, and only the kernel's own check sees that.
"""

from __future__ import annotations

import random
import socket
import threading

_lock = threading.Lock()
_handed_out: set[tuple[str, int]] = set()


def free_ports(address: str, count: int) -> list[int]:
    """Return ``count`` distinct ports bindable on ``address`` right now.

    All probe sockets stay open until every port is chosen so the kernel
    never hands the same one twice; ports already given to this process are
    skipped, so concurrent hosts in one fleet cannot collide. Another process
    may still grab a port before the server binds it (a narrow race).
    """
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _lock:
            while len(ports) < count:
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind((address, 0))
                port = probe.getsockname()[1]
                if (address, port) not in _handed_out:
                    ports.append(port)
            _handed_out.update((address, port) for port in ports)
    finally:
        for probe in probes:
            probe.close()
    return ports


def release(address: str, ports: list[int]) -> None:
    """Forget ports of a stopped host so a later fleet may reuse them."""
    with _lock:
        _handed_out.difference_update((address, port) for port in ports)


def is_listening(address: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def common_free_port(addresses: list[str], attempts: int = 200) -> int:
    """One port bindable right now on every address (each loopback host's agent on it)."""
    rng = random.Random()
    for _ in range(attempts):
        port = rng.randint(20000, 45000)
        probes: list[socket.socket] = []
        try:
            with _lock:
                if any((a, port) in _handed_out for a in addresses):
                    continue
                for address in addresses:
                    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    probes.append(probe)
                    probe.bind((address, port))
                _handed_out.update((a, port) for a in addresses)
                return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise OSError(f"no port free on all of {len(addresses)} addresses after {attempts} tries")
