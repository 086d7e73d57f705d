"""A host's addresses, as SSH would reach it: the input of "one machine, one server".

``socket.getaddrinfo`` as the SSH client resolves (``/etc/hosts`` first, so
loopback names count), each address in its canonical form. An IP address is
its own answer (no lookup); a name's answer is kept ``CACHE_TTL`` seconds in
this process, since a runner asks for the whole registry. A name that does
not resolve now stands for itself (its text, lower-cased).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time

from agent_update.rollout.machines import literal

logger = logging.getLogger(__name__)
CACHE_TTL = 300.0  # seconds a name's addresses are reused
_cache: dict[str, tuple[float, frozenset[str]]] = {}
_lock = threading.Lock()


def _canonical(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def addresses(host: str) -> frozenset[str]:
    """Every address ``host`` resolves to (an IPv4-mapped IPv6 one as IPv4)."""
    text = host.strip().lower().rstrip(".")
    if (ip := _canonical(text)) is not None:
        return frozenset({ip})
    now = time.monotonic()
    with _lock:
        hit = _cache.get(text)
    if hit is not None and now - hit[0] < CACHE_TTL:
        return hit[1]
    try:
        found = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        logger.info("%s does not resolve (%s): compared as written", host, exc)
        return literal(host)
    out = frozenset(ip for *_, sockaddr in found if (ip := _canonical(str(sockaddr[0]))))
    out = out or literal(host)
    with _lock:
        _cache[text] = (now, out)
    return out
