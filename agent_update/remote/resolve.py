"""A host's addresses, as SSH would reach it: the input of "one machine, one server".

``socket.getaddrinfo`` as the SSH client resolves (``/etc/hosts`` first, so
loopback names count), each address in its canonical form. A name that does
not resolve now stands for itself (its text, lower-cased).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from agent_update.rollout.machines import literal

logger = logging.getLogger(__name__)


def addresses(host: str) -> frozenset[str]:
    """Every address ``host`` resolves to (an IPv4-mapped IPv6 one as IPv4)."""
    try:
        found = socket.getaddrinfo(host.strip(), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        logger.info("%s does not resolve (%s): compared as written", host, exc)
        return literal(host)
    out = set()
    for *_, sockaddr in found:
        text = str(sockaddr[0]).split("%", 1)[0]  # no IPv6 zone
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        mapped = getattr(ip, "ipv4_mapped", None)
        out.add(str(mapped or ip))
    return frozenset(out) or literal(host)
