"""One machine, one server, computed once per registry state for every job of a site.

The runner keys each server lease by machine (rollout/machines.py): it lists
the whole registry and resolves every host, then keeps that index 30 s. A
CLI runner pays that once; on the desk every row is a job in a fresh work
horse, so each job paid it again: O(registry) statements and DNS lookups per
server (0.15-0.3 s at 2,000 entries, docs/desk-bench.md). ``shared_keys`` is
the runner's memo (``machines.Memo``): the index lives in the site's Redis
cache under the registry's fingerprint (per registry doctype: how many
records, the newest ``modified``), so a record added, edited or removed
makes a new key at once, and ``TTL`` bounds how long an address a host's
name resolves to is trusted (as the resolver's own cache does). Redis down:
computed here, logged, and the rollout goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import frappe

from agent_update import frappe_registry as registry
from agent_update import press_servers
from agent_update.frappe_log import app_log
from agent_update.remote.resolve import CACHE_TTL

PREFIX = "agent_update:machine_keys:"
TTL = int(CACHE_TTL)


def fingerprint() -> str:
    """The registry's state: each registry doctype's record count and newest change."""
    parts = []
    for doctype in (registry.AGENT_SERVER, *press_servers.server_doctypes()):
        count, newest = frappe.db.sql(f"SELECT COUNT(*), MAX(modified) FROM `tab{doctype}`")[0]  # noqa: S608
        parts.append(f"{doctype}={count}@{newest}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def shared_keys(compute: Callable[[], dict[str, str]]) -> dict[str, str]:
    """The registry's lease keys as the site's jobs share them (see the module's text)."""
    try:
        key = PREFIX + fingerprint()
        found = frappe.cache.get_value(key)
    except Exception:
        app_log().warning("machine index: not read from the cache; computed here", exc_info=True)
        return compute()
    if isinstance(found, dict):
        return found
    keys = compute()
    try:
        frappe.cache.set_value(key, keys, expires_in_sec=TTL)
    except Exception:
        app_log().warning("machine index: not stored in the cache", exc_info=True)
    return keys
