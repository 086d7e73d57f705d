"""Frappe Press's settings as this app's defaults, on a site where Press is installed.

Press's own agent tool takes its repository from Press Settings'
``agent_repository_owner`` (``github.com/<owner>/agent``, owner ``frappe`` when
empty) and its branch from Press Settings' ``branch`` (``master`` when empty).
This app does the same for an update that leaves Repo or Branch empty, unless
Agent Update Settings has a default of its own: this app's settings win where
set. The git token for a private repository comes from Press Settings'
``agent_github_access_token`` (else ``github_access_token``) when this app has
none. Nothing is copied: Press Settings is read each time settings are built.
"""

from __future__ import annotations

from dataclasses import dataclass

import frappe

PRESS_APP = "press"
PRESS_SETTINGS = "Press Settings"
DEFAULT_OWNER = "frappe"  # what Press uses when agent_repository_owner is empty
DEFAULT_BRANCH = "master"


@dataclass(frozen=True)
class PressDefaults:
    repo: str
    branch: str
    git_token: str


def press_installed() -> bool:
    return PRESS_APP in frappe.get_installed_apps()


def defaults_from(owner: str | None, branch: str | None, token: str | None) -> PressDefaults:
    """Press's rule for the agent's source, as a URL this app's git accepts."""
    owner = (owner or "").strip() or DEFAULT_OWNER
    return PressDefaults(
        repo=f"https://github.com/{owner}/agent",
        branch=(branch or "").strip() or DEFAULT_BRANCH,
        git_token=(token or "").strip(),
    )


def press_defaults() -> PressDefaults | None:
    """Press Settings' defaults, or None on a site without Press."""
    if not press_installed():
        return None

    def get(field: str) -> str | None:
        return frappe.db.get_single_value(PRESS_SETTINGS, field)

    token = get("agent_github_access_token") or get("github_access_token")
    return defaults_from(get("agent_repository_owner"), get("branch"), token)
