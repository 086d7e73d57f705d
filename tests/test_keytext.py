"""Pasted SSH keys: line breaks repaired, fingerprints as ssh-keygen prints them."""

from __future__ import annotations

import base64
import hashlib

import paramiko
import pytest

from agent_update.keytext import describe_key, normalize_key
from agent_update.rollout.errors import AgentUpdateError


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[str, paramiko.RSAKey]:
    import io

    key = paramiko.RSAKey.generate(2048)
    out = io.StringIO()
    key.write_private_key(out)
    return out.getvalue(), key


def _sha256(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def test_a_key_pasted_with_folded_or_crlf_line_breaks_loads(rsa_pem):
    pem, key = rsa_pem
    folded = " ".join(pem.split("\n"))  # what a one-line input makes of it
    crlf = pem.replace("\n", "\r\n")
    for pasted in (pem, folded, crlf, "  \n" + pem + "\n\n"):
        assert normalize_key(pasted) == pem
        assert describe_key(pasted) == f"ssh-rsa {_sha256(key)}"


def test_a_bad_key_is_refused_with_the_reason():
    for bad in (
        "",
        "not a key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ):
        with pytest.raises(AgentUpdateError):
            describe_key(bad)
