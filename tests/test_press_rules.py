"""How a Frappe Press server record becomes the engine's Server (no Frappe needed)."""

from __future__ import annotations

import pytest

from agent_update import press_rules as rules
from agent_update.rollout.errors import ValidationError

RECORD = {
    "name": "f1-mumbai.frappe.cloud",
    "ip": "10.0.0.5",
    "ssh_user": "",
    "ssh_port": 2222,
    "status": "Active",
    "disable_agent_update": 0,
    "is_self_hosted": 1,
    "halt_agent_jobs": 0,
}


def test_press_own_rule_by_default():
    server = rules.server_from_record("Server", RECORD, rules.PressAccess.of(), "pw")
    assert server.name == "f1-mumbai.frappe.cloud" and server.server_type == "Server"
    assert (server.host, server.ssh_port, server.ssh_user) == ("10.0.0.5", 2222, "root")
    assert server.agent_url == "https://f1-mumbai.frappe.cloud:443/agent"
    assert (server.agent_dir, server.agent_user) == ("/home/frappe/agent", "frappe")
    assert server.agent_password == "pw" and server.self_hosted and not server.opted_out


def test_the_servers_press_settings_list_use_port_8443():
    access = rules.PressAccess.of(alt_ports="n1.frappe.cloud\n f1-mumbai.frappe.cloud \n\n")
    server = rules.server_from_record("Server", RECORD, access)
    assert server.agent_url == "https://f1-mumbai.frappe.cloud:8443/agent"
    other = rules.server_from_record("Server", {**RECORD, "name": "f2.frappe.cloud"}, access)
    assert other.agent_url == "https://f2.frappe.cloud:443/agent"


def test_templates_fill_each_placeholder():
    access = rules.PressAccess.of(
        "http://{ip}:8000/{hostname}", "/srv/{hostname}/agent", "{ssh_user}"
    )
    server = rules.server_from_record("Proxy Server", {**RECORD, "ssh_user": "ops"}, access)
    assert server.agent_url == "http://10.0.0.5:8000/f1-mumbai"
    assert (server.agent_dir, server.agent_user, server.ssh_user) == (
        "/srv/f1-mumbai/agent",
        "ops",
        "ops",
    )


@pytest.mark.parametrize(
    ("field", "template", "words"),
    [
        ("press_agent_url", "https://{name.__class__}/agent", "not one of the placeholders"),
        ("press_agent_url", "https://{name!r}/agent", "not one of the placeholders"),
        ("press_agent_url", "https://{nope}/agent", "{nope}"),
        ("press_agent_url", "https://{name", "expected '}'"),
        ("press_agent_url", "ftp://{name}/agent", "http:// or https://"),
        ("press_agent_dir", "/home/{ip}/agent", "{ip}"),
        ("press_agent_dir", "relative/{hostname}", "must be absolute"),
        ("press_agent_user", "{ssh_user}; id", ""),
    ],
)
def test_a_bad_template_names_its_field(field, template, words):
    values = {"press_agent_url": "", "press_agent_dir": "", "press_agent_user": ""}
    values[field] = template
    access = rules.PressAccess.of(
        values["press_agent_url"], values["press_agent_dir"], values["press_agent_user"]
    )
    with pytest.raises(ValidationError) as err:
        rules.validate_access(access)
    assert err.value.field == field
    assert words in err.value.message


def test_opted_out_records_say_why():
    off = rules.server_from_record(
        "Server", {**RECORD, "disable_agent_update": 1}, rules.PressAccess()
    )
    assert off.opted_out and "disable_agent_update is set" in off.opt_out_reason
    broken = rules.server_from_record("Server", {**RECORD, "status": "Broken"}, rules.PressAccess())
    assert broken.opted_out and "status is Broken" in broken.opt_out_reason


def test_busy_means_a_row_not_ended_of_a_running_press_update():
    rows = [
        {"server": "a", "status": "Running", "parent": "AU-1", "update_status": "Running"},
        {"server": "b", "status": "Pending", "parent": "AU-1", "update_status": "Running"},
        {"server": "c", "status": "Success", "parent": "AU-1", "update_status": "Running"},
        {"server": "d", "status": "Pending", "parent": "AU-2", "update_status": "Paused"},
        {"server": "e", "status": "Rolling Back", "parent": "AU-3", "update_status": "Running"},
    ]
    assert rules.busy_in_press(rows) == {
        "a": "Press Agent Update AU-1",
        "b": "Press Agent Update AU-1",
        "e": "Press Agent Update AU-3",
    }
