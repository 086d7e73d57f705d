// Agent Server form: a History button listing every rollout that named this
// server (agent_update.api.server_history): from, to, what it ran, how it ended.
frappe.ui.form.on("Agent Server", {
	refresh(frm) {
		if (frm.is_new()) return;
		frm.add_custom_button(__("History"), () =>
			frappe.xcall("agent_update.api.server_history", { server: frm.doc.name }).then((rows) => {
				const esc = frappe.utils.escape_html;
				const when = (t) => (t ? frappe.datetime.str_to_user(frappe.datetime.get_datetime_as_string(new Date(t * 1000))) : "");
				const body = (rows || [])
					.map(
						(e) => `<tr><td><a href="/app/agent-rollout/${esc(e.update)}">${esc(e.update)}</a></td>
						<td>${esc(__(e.status))}</td><td class="text-monospace">${esc((e.before || "?").slice(0, 10))}</td>
						<td class="text-monospace">${esc((e.target || "").slice(0, 10))}</td>
						<td class="text-monospace">${esc((e.after || "?").slice(0, 10))}</td>
						<td>${esc(when(e.ended_at))}</td><td>${esc(e.reason || "")}</td></tr>`
					)
					.join("");
				frappe.msgprint({
					title: __("History of {0}", [frm.doc.name]),
					wide: true,
					message: rows && rows.length
						? `<table class="table table-bordered"><tr><th>${__("Update")}</th><th>${__("Status")}</th><th>${__("From")}</th><th>${__("To")}</th><th>${__("Runs")}</th><th>${__("Ended")}</th><th>${__("Reason")}</th></tr>${body}</table>`
						: __("No rollout has named this server yet."),
				});
			})
		);
	},
});
