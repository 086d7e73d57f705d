"""The upgrade check's two halves, run in a bench's sites folder by frappe-upgrade.sh.

``seed SITE``: with the app as it was before the rename on PYTHONPATH, fill the
old doctypes (two Agent Updates of three rows, an Agent Server with its agent
password, a comment on each update). ``check SITE``: with this checkout on
PYTHONPATH, after ``bench migrate``, every one of them must be there under the
new names and open with this checkout's controllers. Plain Python over the
framework's API: it must run against both versions of the app.
"""

from __future__ import annotations

import sys

import frappe
from frappe.utils.password import get_decrypted_password

SERVER = "old1.example.com"
UPDATES = ("AU-OLD-0", "AU-OLD-1")
COMMIT = "a" * 40


def seed() -> None:
    assert frappe.db.get_value("DocType", "Agent Update", "module") == "Agent Update"
    frappe.get_doc(
        {
            "doctype": "Agent Server",
            "server_name": SERVER,
            "host": "127.0.0.1",
            "server_type": "Server",
            "status": "Active",
            "agent_url": f"https://{SERVER}/agent",
            "agent_password": "secret-1",
        }
    ).insert()
    for name in UPDATES:
        # rows as the engine writes them (Save would ask git for the branch head)
        frappe.db.sql(
            "INSERT INTO `tabAgent Update` (name, status, repo, branch, commit_hash) "
            "VALUES (%s, 'Success', 'https://git.example.com/agent', 'master', %s)",
            (name, COMMIT),
        )
        for idx in (1, 2, 3):
            frappe.db.sql(
                "INSERT INTO `tabAgent Update Server` (name, parent, parenttype, parentfield, "
                "idx, server, server_type, status) "
                "VALUES (%s, %s, 'Agent Update', 'servers', %s, %s, 'Server', 'Success')",
                (f"{name}-{idx}", name, idx, SERVER),
            )
        frappe.get_doc(
            {
                "doctype": "Comment",
                "comment_type": "Comment",
                "reference_doctype": "Agent Update",
                "reference_name": name,
                "content": "kept",
            }
        ).insert(ignore_permissions=True)
    frappe.db.commit()
    updates, rows = frappe.db.count("Agent Update"), frappe.db.count("Agent Update Server")
    print(f"seeded: {updates} updates, {rows} rows")


def check() -> None:
    tables = frappe.db.get_tables(cached=False)
    for old in ("Agent Update", "Agent Update Server"):
        assert not frappe.db.exists("DocType", old), f"doctype {old} is still there"
        assert f"tab{old}" not in tables, f"table tab{old} is still there"
    names = frappe.get_all("Agent Rollout", pluck="name", order_by="name")
    rows = 0
    assert names == list(UPDATES), f"Agent Rollouts after migrate: {names}"
    for name in names:
        doc = frappe.get_doc("Agent Rollout", name)
        assert type(doc).__name__ == "AgentRollout", type(doc)
        assert (doc.status, doc.commit_hash) == ("Success", COMMIT), (doc.status, doc.commit_hash)
        assert [(r.idx, r.server) for r in doc.servers] == [(i, SERVER) for i in (1, 2, 3)]
        rows += len(doc.servers)
    kept = frappe.get_all(
        "Comment", filters={"reference_doctype": "Agent Rollout", "content": "kept"}, pluck="name"
    )
    assert len(kept) == 2, f"comments moved: {len(kept)}"
    assert get_decrypted_password("Agent Server", SERVER, "agent_password") == "secret-1"
    print(f"upgrade: {len(names)} rollouts, {rows} rows, {len(kept)} comments, password kept")


if __name__ == "__main__":
    action, site = sys.argv[1], sys.argv[2]
    frappe.init(site=site)
    frappe.connect()
    try:
        {"seed": seed, "check": check}[action]()
    finally:
        frappe.destroy()
