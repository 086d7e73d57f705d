"""SSH private keys as an operator pastes them: repaired line breaks, a fingerprint.

A key pasted into a one-line input (or sent through a form that folds
whitespace) arrives with its line breaks turned into spaces, or with CRLF.
``normalize_key`` puts the PEM lines back so the key loads; ``describe_key``
is what the desk shows instead of the key: its type and the SHA256
fingerprint of its public half (as ``ssh-keygen -lf`` prints it).
"""

from __future__ import annotations

import re

from agent_update.remote.ssh import load_private_key

_ARMOUR = re.compile(r"(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)", re.S)


def normalize_key(text: str) -> str:
    """The key's PEM text with one header, body and footer per line, ending in a newline."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    found = _ARMOUR.search(text)
    if not found:
        return text + "\n" if text else ""
    head, body, tail = found.groups()
    lines = [line.strip() for line in body.strip().split("\n")]
    if len(lines) == 1 and ":" not in lines[0]:  # folded onto one line: base64 has no spaces
        lines = lines[0].split()
    return "\n".join([head, *[line for line in lines if line or ":" in line], tail]) + "\n"


def describe_key(text: str) -> str:
    """``ssh-ed25519 SHA256:…`` for a loadable key; SshAuthError (why) otherwise."""
    key = load_private_key(normalize_key(text))
    return f"{key.get_name()} {key.fingerprint}"
