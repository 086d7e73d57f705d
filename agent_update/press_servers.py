"""Frappe Press's own server records, read as this app's registry (never copied).

On a site with Press, every Press doctype with an ``agent_password`` field
(``Server``, ``Database Server``, ``Proxy Server``, …) is a server type of
this app: a record's doctype is its server type, and host, SSH user and port,
status and switches are read from it at each use (press_rules.py says how).
The agent password is decrypted only when a server is about to be reached
(``get_server``), never listed, never written into this app's tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import frappe
from frappe.utils.caching import request_cache
from frappe.utils.password import get_decrypted_password

from agent_update import frappe_codec as codec
from agent_update.frappe_press import PRESS_SETTINGS, press_installed
from agent_update.press_rules import (
    HALT_FIELD,
    PRESS_BUSY_ROW_STATUSES,
    PRESS_BUSY_UPDATE_STATUSES,
    RECORD_FIELDS,
    PressAccess,
    busy_in_press,
    server_from_record,
)
from agent_update.rollout.model import Server

PRESS_UPDATE = "Agent Update"  # Press's own tool: its doctypes keep their names
PRESS_UPDATE_ROW = "Agent Update Server"
ALT_PORTS_FIELD = "servers_using_alternative_http_port_for_communication"


@request_cache
def server_doctypes() -> tuple[str, ...]:
    """Press's doctypes whose records run an agent (have an ``agent_password``), sorted.

    Empty on a site without Press. Cached for the request (doctypes change
    only with a migrate).
    """
    found: tuple[str, ...] = ()
    if press_installed():
        modules = set(frappe.get_module_list("press"))
        parents = frappe.get_all(
            "DocField",
            filters={"fieldname": "agent_password", "parenttype": "DocType"},
            pluck="parent",
        )
        found = tuple(
            sorted(
                d.name
                for d in frappe.get_all(
                    "DocType",
                    filters={"name": ["in", parents or [""]], "istable": 0, "issingle": 0},
                    fields=["name", "module"],
                )
                if d.module in modules
            )
        )
    return found


def access() -> PressAccess:
    """Agent Update Settings' templates over Press Settings' alternative-port list."""
    settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
    alt = frappe.db.get_single_value(PRESS_SETTINGS, ALT_PORTS_FIELD) if press_installed() else ""
    return PressAccess.of(
        settings.get("press_agent_url") or "",
        settings.get("press_agent_dir") or "",
        settings.get("press_agent_user") or "",
        alt or "",
    )


def _fields(doctype: str) -> list[str]:
    meta = frappe.get_meta(doctype)
    return [f for f in RECORD_FIELDS if f == "name" or meta.has_field(f)]


def list_servers(doctypes: Iterable[str] | None = None) -> list[Server]:
    """Every Press server record, without passwords (they only decide what is listed)."""
    chosen = server_doctypes() if doctypes is None else tuple(doctypes)
    if not chosen:  # a site without Press: no settings to read
        return []
    how = access()
    servers = []
    for doctype in chosen:
        for record in frappe.get_all(doctype, fields=_fields(doctype), order_by="name"):
            servers.append(server_from_record(doctype, record, how))
    return servers


def doctype_of(name: str) -> str | None:
    """The Press doctype holding a server of this name (the first, in sorted order)."""
    for doctype in server_doctypes():
        if frappe.db.exists(doctype, name):
            return doctype
    return None


def doctypes_of(names: Iterable[str]) -> dict[str, str]:
    """Server name -> Press doctype, for those Press holds (one query per doctype)."""
    wanted = sorted(set(names))
    found: dict[str, str] = {}
    if not wanted:
        return found
    for doctype in server_doctypes():
        for name in frappe.get_all(doctype, filters={"name": ["in", wanted]}, pluck="name"):
            found.setdefault(name, doctype)
    return found


def get_server(name: str) -> Server | None:
    """One Press server with its agent password, read now (None: Press has no such server)."""
    doctype = doctype_of(name)
    if doctype is None:
        return None
    record = frappe.db.get_value(doctype, name, _fields(doctype), as_dict=True)
    if not record:
        return None
    password = get_decrypted_password(doctype, name, "agent_password", raise_exception=False)
    return server_from_record(doctype, record, access(), password or "")


def has_halt_switch(doctype: str) -> bool:
    return doctype in server_doctypes() and frappe.get_meta(doctype).has_field(HALT_FIELD)


def busy_servers(names: Iterable[str] | None = None) -> dict[str, str]:
    """Servers in a row not yet ended of Press's own running Agent Updates.

    Server -> "Press Agent Update <name>" (the holder this app waits for).
    """
    if not press_installed() or not frappe.db.exists("DocType", PRESS_UPDATE):
        return {}
    sql = (
        "SELECT r.server, r.status, r.parent, u.status AS update_status "
        f"FROM `tab{PRESS_UPDATE_ROW}` r JOIN `tab{PRESS_UPDATE}` u ON u.name=r.parent "
        "WHERE r.parenttype=%s AND u.status IN %s AND r.status IN %s"
    )
    params: list[object] = [PRESS_UPDATE, PRESS_BUSY_UPDATE_STATUSES, PRESS_BUSY_ROW_STATUSES]
    if names is not None:
        chosen = sorted(set(names))
        if not chosen:
            return {}
        sql += " AND r.server IN %s"
        params.append(chosen)
    return busy_in_press(frappe.db.sql(sql, params, as_dict=True))
