"""Frappe hooks of the agent_update app."""

app_name = "agent_update"
app_title = "Agent Update"
app_publisher = "agent_update developers"
app_description = "Roll an update of the server agent across a fleet, safely and fast."
app_email = "agent-update@example.com"
app_license = "MIT"
# "org/repo" form: a bare "frappe" makes `bench install-app` ask GitHub's API
# which organisation it belongs to, which fails on a machine without network.
required_apps = ["frappe/frappe"]

before_install = "agent_update.install.before_install"
after_install = "agent_update.install.after_install"
after_migrate = "agent_update.install.after_migrate"

# The watchdog: resumes rows whose worker died (expired lease) and a Build
# Plan whose planner died. Healthy rollouts never wait for it: the job that
# ends a row starts the next one at once.
scheduler_events = {
    "cron": {
        "* * * * *": ["agent_update.tasks.tick"],
    },
}

# Other apps may subscribe to these around each server (see docs/frappe.md):
#   agent_update_before_server = ["myapp.module.fn"]   # fn(update=Update, row=Row)
#   agent_update_after_server = ["myapp.module.fn"]

# Frappe Press's own Agent Update (when Press is installed): its form warns of
# servers an unfinished Agent Rollout also updates (docs/press.md).
doc_events = {
    "Agent Update": {"validate": "agent_update.press_hooks.warn_shared_servers"},
}
