"""Frappe hooks of the agent_update app (metadata; the Frappe layer adds the rest)."""

app_name = "agent_update"
app_title = "Agent Update"
app_publisher = "agent_update developers"
app_description = "Roll an update of the server agent across a fleet, safely and fast."
app_email = "agent-update@example.com"
app_license = "MIT"
required_apps = ["frappe"]
