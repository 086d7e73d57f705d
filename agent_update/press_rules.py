"""Frappe Press's servers as this app's registry: the rules, with no Frappe in them.

Press keeps its fleet in its own doctypes (``Server``, ``Database Server``,
``Proxy Server``, … every doctype with an ``agent_password``). This module
turns one such record into the engine's ``Server`` the way Press itself
reaches it, and holds the other decisions the Press layer makes
(press_servers.py reads the records, press_switches.py acts on them):

* SSH: host from ``ip``, user from ``ssh_user`` (``root`` when the doctype
  has none, as Press does), port from ``ssh_port`` (22).
* The agent: ``https://{name}:{port}/agent`` with port 443, or 8443 for the
  servers Press Settings lists, TLS verified; its directory and user are
  Press's (``/home/frappe/agent``, ``frappe``). Each of the three is a
  template in Agent Update Settings, so a fleet laid out otherwise (or a
  test fleet on loopback) is reached without copying anything out of Press.
* Which Press Agent Update rows make a server busy, and which doctypes have
  Press's ``halt_agent_jobs`` switch.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Server

PRESS_AGENT_URL = "https://{name}:{port}/agent"
PRESS_AGENT_DIR = "/home/frappe/agent"
PRESS_AGENT_USER = "frappe"
PRESS_SSH_USER = "root"  # Press's default, and its fallback for Database Server (no field)
PORT, ALT_PORT = 443, 8443
HALT_FIELD = "halt_agent_jobs"  # Press creates no agent job for a server while it is set
# Press's own tool: a server in one of its Running updates, in a row not yet ended.
PRESS_BUSY_UPDATE_STATUSES = ("Running",)
PRESS_BUSY_ROW_STATUSES = ("Pending", "Running", "Rolling Back")
# The fields of a Press server record this app reads (those a doctype has).
RECORD_FIELDS = (
    "name",
    "ip",
    "ssh_user",
    "ssh_port",
    "status",
    "disable_agent_update",
    "is_self_hosted",
    HALT_FIELD,
)
PLACEHOLDERS = {
    "press_agent_url": ("name", "hostname", "ip", "port"),
    "press_agent_dir": ("name", "hostname", "ssh_user"),
    "press_agent_user": ("name", "hostname", "ssh_user"),
}


@dataclass(frozen=True)
class PressAccess:
    """How to reach a Press server's agent: Agent Update Settings, Press's rule by default."""

    agent_url: str = PRESS_AGENT_URL
    agent_dir: str = PRESS_AGENT_DIR
    agent_user: str = PRESS_AGENT_USER
    alt_port_servers: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, agent_url: str = "", agent_dir: str = "", agent_user: str = "", alt_ports: str = ""
    ) -> PressAccess:
        """Blank settings are Press's own values; ``alt_ports`` is Press Settings' list."""
        return cls(
            agent_url=(agent_url or "").strip() or PRESS_AGENT_URL,
            agent_dir=(agent_dir or "").strip() or PRESS_AGENT_DIR,
            agent_user=(agent_user or "").strip() or PRESS_AGENT_USER,
            alt_port_servers=alt_port_servers(alt_ports),
        )


def alt_port_servers(text: str | None) -> frozenset[str]:
    """Press Settings' ``servers_using_alternative_http_port_for_communication``: one per line."""
    return frozenset(line.strip() for line in (text or "").splitlines() if line.strip())


def agent_port(name: str, alt: Iterable[str]) -> int:
    return ALT_PORT if name in alt else PORT


def check_template(field: str, template: str) -> None:
    """Only the field's own placeholders, by name, with no format spec or attribute."""
    allowed = PLACEHOLDERS[field]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValidationError(field, f"{template!r}: {exc}") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            shown = ", ".join("{" + a + "}" for a in allowed)
            raise ValidationError(
                field, f"{template!r}: {{{name}}} is not one of the placeholders {shown}"
            )


def render(field: str, template: str, **values: object) -> str:
    check_template(field, template)
    return template.format(**{k: values.get(k, "") for k in PLACEHOLDERS[field]})


def validate_access(access: PressAccess) -> None:
    """Each template renders, for a sample server, into a value the engine accepts.

    Errors name the settings field, not the engine's (the form shows them).
    """
    from agent_update.rollout import rules

    record = {"name": "f1.example.com", "ip": "10.0.0.1", "ssh_user": "root", "status": "Active"}
    server = server_from_record("Server", record, access)
    fields = {
        "agent_url": "press_agent_url",
        "agent_dir": "press_agent_dir",
        "agent_user": "press_agent_user",
    }
    try:
        rules.validate_server(server)
    except ValidationError as exc:
        raise ValidationError(fields.get(exc.field, exc.field), exc.message) from exc


def hostname_of(name: str) -> str:
    return name.split(".", 1)[0]


def server_from_record(
    doctype: str,
    record: Mapping[str, Any],
    access: PressAccess,
    password: str = "",
) -> Server:
    """The engine's Server for one Press record (``server_type`` is its doctype).

    A rendered value the engine does not accept is refused by its own checks
    when the server is reached, as a failed row naming the field, like any
    registry value (the settings form checks the templates: validate_access).
    """
    name = str(record.get("name") or "")
    ssh_user = str(record.get("ssh_user") or "").strip() or PRESS_SSH_USER
    values = {
        "name": name,
        "hostname": hostname_of(name),
        "ip": str(record.get("ip") or ""),
        "port": agent_port(name, access.alt_port_servers),
        "ssh_user": ssh_user,
    }
    return Server(
        name=name,
        host=str(record.get("ip") or ""),
        server_type=doctype,
        ssh_port=int(record.get("ssh_port") or 22),
        ssh_user=ssh_user,
        agent_dir=render("press_agent_dir", access.agent_dir, **values),
        agent_user=render("press_agent_user", access.agent_user, **values),
        agent_url=render("press_agent_url", access.agent_url, **values),
        agent_password=password,
        status=str(record.get("status") or ""),
        disable_agent_update=bool(record.get("disable_agent_update")),
        self_hosted=bool(record.get("is_self_hosted")),
    )


def busy_in_press(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Server -> "Press Agent Update <name>" for rows of Press's running updates.

    ``rows`` are Press ``Agent Update Server`` rows joined with their update's
    status (``server``, ``status``, ``parent``, ``update_status``).
    """
    busy: dict[str, str] = {}
    for row in rows:
        if (
            row.get("update_status") in PRESS_BUSY_UPDATE_STATUSES
            and row.get("status") in PRESS_BUSY_ROW_STATUSES
            and row.get("server")
        ):
            busy.setdefault(str(row["server"]), f"Press Agent Update {row['parent']}")
    return busy
