"""The server registry of a site: Frappe Press's servers first, then Agent Server.

With Press installed, its own server records are the registry (press_servers.py):
nothing is registered twice and no password is copied. Agent Server holds the
hosts Press does not know, and the whole fleet on a site without Press. A name
both hold is Press's (the Agent Server form refuses such a name).
"""

from __future__ import annotations

from collections.abc import Iterable

import frappe
from frappe.utils.password import get_decrypted_password

from agent_update import frappe_codec as codec
from agent_update import press_servers
from agent_update.rollout.model import Server

AGENT_SERVER = codec.SERVER_DOCTYPE
AGENT_SERVER_TABLE = f"`tab{AGENT_SERVER}`"


def get_server(name: str) -> Server | None:
    """One server with its agent password, as the registry says now (None: unknown)."""
    found = press_servers.get_server(name)
    if found is not None:
        return found
    rows = frappe.db.sql(f"SELECT * FROM {AGENT_SERVER_TABLE} WHERE name=%s", name, as_dict=True)
    if not rows:
        return None
    password = get_decrypted_password(AGENT_SERVER, name, "agent_password", raise_exception=False)
    return codec.server_from(rows[0], password or "")


def list_servers() -> list[Server]:
    """Every server, without passwords (they only decide which servers are listed)."""
    press = press_servers.list_servers()
    known = {s.name for s in press}
    rows = frappe.db.sql(f"SELECT * FROM {AGENT_SERVER_TABLE} ORDER BY name", as_dict=True)
    own = [codec.server_from(r) for r in rows if r.name not in known]
    return sorted(press + own, key=lambda s: s.name)


def doctypes_of(names: Iterable[str]) -> dict[str, str]:
    """Server name -> the doctype its record lives in, for the names the registry knows."""
    wanted = sorted({n for n in names if n})
    found = press_servers.doctypes_of(wanted)
    rest = [n for n in wanted if n not in found]
    if rest:
        for name in frappe.get_all(AGENT_SERVER, filters={"name": ["in", rest]}, pluck="name"):
            found[name] = AGENT_SERVER
    return found
