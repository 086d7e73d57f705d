"""What the desk's views cost the server: the Agent Rollout form and list, as the browser asks.

Each call is what one HTTP request runs (the whitelisted method) plus the
JSON encoding of its response, the way frappe.utils.response encodes it;
the browser's own rendering is not part of it. Used by benchmarks/desk.py
and test_desk_bench.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import frappe
from frappe.model import no_value_fields
from frappe.utils.response import json_handler

from agent_update import api
from agent_update import frappe_codec as codec

# frappe.model.std_fields_list (model.js): every list view asks for these.
LIST_STD_FIELDS = (
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "_user_tags",
    "_comments",
    "_assign",
    "_liked_by",
    "docstatus",
    "idx",
)
LIST_PAGE = 20  # the list view's first page (100 on a large screen)


@dataclass(frozen=True)
class Timing:
    """One request: seconds on the server (and this process's CPU of them), its JSON response.

    On a busy machine the seconds swing with the load; the CPU much less.
    """

    seconds: float
    cpu: float
    body: str = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.body)


def _request(call: Callable[[], Any]) -> Timing:
    """Run ``call`` as one request does: a fresh response, its JSON, then commit."""
    frappe.local.response = frappe._dict({"docs": []})
    began, cpu = time.perf_counter(), time.process_time()
    out = call()
    if out is not None:
        frappe.local.response["message"] = out
    body = json.dumps(frappe.local.response, default=json_handler, separators=(",", ":"))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    frappe.db.commit()
    frappe.local.response = frappe._dict()
    return Timing(seconds, cpu, body)


def get_doc(name: str) -> Timing:
    """The document alone, every row with every field (the store's reads are narrower)."""
    return _request(lambda: frappe.get_doc(codec.UPDATE_DOCTYPE, name))


def form_load(name: str) -> Timing:
    """Opening the form: frappe.desk.form.load.getdoc (document, onload, docinfo)."""
    from frappe.desk.form.load import getdoc

    return _request(lambda: getdoc(codec.UPDATE_DOCTYPE, name))


def form_poll(name: str) -> Timing:
    """The running form's poll (agent_rollout.js): agent_update.api.state."""
    return _request(lambda: api.state(name))


def form_eta(name: str) -> Timing:
    """What the form asks on each refresh and each server's end: agent_update.api.eta."""
    return _request(lambda: api.eta(name))


def list_add_fields() -> list[str]:
    """``add_fields`` of the list view's settings (agent_rollout_list.js)."""
    path = frappe.get_app_path(
        "agent_update", "agent_update", "doctype", "agent_rollout", "agent_rollout_list.js"
    )
    with open(path) as handle:
        found = re.search(r"add_fields:\s*\[([^\]]*)\]", handle.read())
    return re.findall(r"[\"']([\w]+)[\"']", found.group(1)) if found else []


def list_args(page_length: int = LIST_PAGE) -> dict[str, Any]:
    """The arguments the list view sends to frappe.desk.reportview.get (list_view.js)."""
    meta = frappe.get_meta(codec.UPDATE_DOCTYPE)
    shown = [
        df.fieldname
        for df in meta.fields
        if (df.in_list_view and df.fieldtype not in no_value_fields) or df.fieldname == "status"
    ]
    sort_field = meta.sort_field or "modified"
    wanted = [
        *LIST_STD_FIELDS,
        *shown,
        meta.title_field,
        meta.image_field,
        *list_add_fields(),
        "_seen" if meta.track_seen else None,
        sort_field,
        "enabled",
        "disabled",
        "color",
    ]
    fields: list[str] = []
    for name in wanted:
        valid = name and (name in LIST_STD_FIELDS or name == "_seen" or meta.has_field(name))
        column = f"`tab{codec.UPDATE_DOCTYPE}`.`{name}`"
        if valid and column not in fields:
            fields.append(column)
    order = f"`tab{codec.UPDATE_DOCTYPE}`.`{sort_field}` {(meta.sort_order or 'desc').lower()}"
    return {
        "doctype": codec.UPDATE_DOCTYPE,
        "fields": json.dumps(fields),
        "filters": "[]",
        "order_by": order,
        "start": 0,
        "page_length": page_length,
        "view": "List",
        "with_comment_count": 1,
    }


def _with_form(args: dict[str, Any], call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        before = frappe.local.form_dict
        frappe.local.form_dict = frappe._dict(args)
        try:
            return call()
        finally:
            frappe.local.form_dict = before

    return run


def list_view(page_length: int = LIST_PAGE) -> Timing:
    """One page of the list view: frappe.desk.reportview.get."""
    from frappe.desk.reportview import get

    return _request(_with_form(list_args(page_length), get))


def list_count() -> Timing:
    """The list view's count beside the page: frappe.desk.reportview.get_count."""
    from frappe.desk.reportview import get_count

    args = {"doctype": codec.UPDATE_DOCTYPE, "filters": "[]", "distinct": "false", "limit": 1001}
    return _request(_with_form(args, get_count))
