"""The desk's form scripts against the doctypes they draw: what can be checked without a browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

DOCTYPES = Path(__file__).resolve().parents[1] / "agent_update" / "agent_update" / "doctype"


def _fields(doctype: str) -> list[dict]:
    folder = DOCTYPES / doctype.lower().replace(" ", "_")
    return json.loads((folder / f"{folder.name}.json").read_text())["fields"]


def _form_fields(doctype: str) -> list[dict]:
    """A form's own fields and those of its child tables (the grids it draws)."""
    own = _fields(doctype)
    children = [f["options"] for f in own if f["fieldtype"] == "Table"]
    return own + [f for child in children for f in _fields(child)]


def test_indicator_formatters_are_set_on_link_fields_only() -> None:
    """Frappe's set_indicator_formatter links to /app/<the field's options>/<value>: on a
    field without options (a Data field) it throws while the grid draws a row, and the
    form stops drawing (a new rollout's servers never appeared after Save)."""
    for script in DOCTYPES.glob("*/*.js"):
        doctype = json.loads((script.parent / f"{script.parent.name}.json").read_text())["name"]
        for fieldname in re.findall(r"set_indicator_formatter\(\s*[\"'](\w+)", script.read_text()):
            found = [f for f in _form_fields(doctype) if f["fieldname"] == fieldname]
            assert found, f"{script.name}: no field {fieldname}"
            for field in found:
                assert field["fieldtype"] == "Link" and field.get("options"), (
                    f"{script.name}: set_indicator_formatter on {fieldname}, a {field['fieldtype']}"
                )


def test_the_server_cell_is_drawn_by_the_forms_own_formatter() -> None:
    script = (DOCTYPES / "agent_rollout" / "agent_rollout.js").read_text()
    server = next(f for f in _fields("Agent Rollout Server") if f["fieldname"] == "server")
    assert server["fieldtype"] == "Data"  # the name in whichever registry holds it
    assert re.search(r"^\t\tserver\(value, df, options, doc\) \{", script, re.M)
    assert "server_doctype" in script  # its link goes to the record in that registry


def test_no_workspace_shortcut_counts_a_single_doctype() -> None:
    """A shortcut with a stats filter makes the desk count its doctype's records: a single
    doctype has no table, and the server answered the workspace with an error."""
    for path in (DOCTYPES.parent / "workspace").glob("*/*.json"):
        for shortcut in json.loads(path.read_text()).get("shortcuts", []):
            if shortcut.get("type") != "DocType":
                continue
            target = DOCTYPES / shortcut["link_to"].lower().replace(" ", "_")
            meta = json.loads((target / f"{target.name}.json").read_text())
            if meta.get("issingle"):
                assert "stats_filter" not in shortcut, f"{path.name}: {shortcut['label']}"


# The languages Frappe v15's Code control knows (controls/code.js); any other is plain text.
CODE_LANGUAGES = {
    "Javascript",
    "JS",
    "Python",
    "Py",
    "PythonExpression",
    "HTML",
    "CSS",
    "Markdown",
    "SCSS",
    "JSON",
    "Golang",
    "Go",
    "Jinja",
}


def test_code_fields_name_a_language_the_desk_knows() -> None:
    for meta in DOCTYPES.glob("*/*.json"):
        for field in json.loads(meta.read_text()).get("fields", []):
            if field["fieldtype"] == "Code" and field.get("options"):
                assert field["options"] in CODE_LANGUAGES, (meta.name, field["fieldname"])
