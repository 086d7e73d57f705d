"""Ed25519 keys for the fleet: one client key, one host key per server."""

from __future__ import annotations

import subprocess
from pathlib import Path


def generate(path: Path, comment: str) -> str:
    """Write an OpenSSH ed25519 key pair without passphrase; return the public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)
    return public_key(path)


def public_key(path: Path) -> str:
    """``"ssh-ed25519 AAAA…"`` (type and key, no comment) of the pair at ``path``."""
    kind, key = Path(f"{path}.pub").read_text().split()[:2]
    return f"{kind} {key}"


def known_hosts_line(address: str, port: int, public: str) -> str:
    return f"[{address}]:{port} {public}"
