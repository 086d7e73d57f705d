// Agent Update form: the buttons of each status, a live progress bar, rows
// redrawn as the runner changes them (realtime events, with a slow reload as
// a fallback when no socket is connected). All work happens server side in
// agent_update.api; this file only asks for it.

(() => {
	const EDITABLE = ["Draft", "Pending"];
	const LIVE = ["Planning", "Running", "Paused"];
	const ENDED = ["Skipped", "Success", "Failure", "Rolled Back", "Fatal"];
	const ROW_COLORS = {
		Draft: "gray",
		Pending: "blue",
		Skipped: "gray",
		Running: "orange",
		Verifying: "yellow",
		Success: "green",
		Failure: "red",
		"Rolling Back": "orange",
		"Rolled Back": "purple",
		Fatal: "red",
	};

	frappe.ui.form.on("Agent Update", {
		setup(frm) {
			frm.set_indicator_formatter("server", (row) => ROW_COLORS[row.status] || "gray");
		},

		onload(frm) {
			agent_update.listen(frm);
		},

		refresh(frm) {
			agent_update.lock(frm);
			agent_update.buttons(frm);
			agent_update.progress(frm);
			agent_update.eta(frm);
			agent_update.poll(frm);
		},
	});

	const agent_update = {
		call(frm, method, args, done) {
			return frappe
				.call({
					method: `agent_update.api.${method}`,
					args: Object.assign({ name: frm.doc.name }, args || {}),
					freeze: true,
				})
				.then((r) => {
					const out = r.message || {};
					frappe.show_alert({
						message: out.queued ? __("Queued") : __("Already queued or done"),
						indicator: out.queued ? "green" : "blue",
					});
					if (done) done(out);
					setTimeout(() => frm.reload_doc(), 1500);
				});
		},

		confirmed(frm, label, question, method) {
			frm.add_custom_button(__(label), () =>
				frappe.confirm(question, () => agent_update.call(frm, method))
			);
		},

		buttons(frm) {
			if (frm.is_new() || frm.is_dirty()) return;
			const status = frm.doc.status;
			if (status === "Draft") {
				agent_update.confirmed(
					frm,
					"Build Plan",
					__("Read every server's agent version and plan the update?"),
					"build_plan"
				);
			}
			if (status === "Pending") {
				agent_update.confirmed(
					frm,
					"Start",
					__("Start updating {0} servers to {1}?", [
						(frm.doc.servers || []).filter((r) => r.status === "Pending").length,
						(frm.doc.commit_hash || "").slice(0, 12),
					]),
					"start"
				);
				frm.add_custom_button(__("Split Update"), () => agent_update.split(frm));
			}
			if (status === "Running") {
				agent_update.confirmed(
					frm,
					"Pause",
					__("Pause? Servers in flight finish; no new server starts."),
					"pause"
				);
			}
			if (status === "Paused") {
				agent_update.confirmed(frm, "Resume", __("Resume the update?"), "resume");
			}
			if (["Pending", "Running", "Paused"].includes(status) && !frm.doc.aborted) {
				frm.add_custom_button(__("Abort"), () => agent_update.abort(frm));
			}
			if (status === "Failure" || status === "Partial Success") {
				agent_update.confirmed(
					frm,
					"Force Continue",
					__("Put every failed server back to Pending and run again?"),
					"force_continue"
				);
			}
		},

		abort(frm) {
			const dialog = new frappe.ui.Dialog({
				title: __("Abort {0}", [frm.doc.name]),
				fields: [
					{
						fieldtype: "HTML",
						options: `<p>${__(
							"Abort stops this update for good: no new server starts, servers in flight finish their step and are verified (never cut), then it ends Aborted. Unlike Pause, it cannot be resumed."
						)}</p>`,
					},
					{
						fieldname: "rollback",
						fieldtype: "Check",
						label: __("Also roll back the servers this update changed"),
						description: __(
							"Each is rolled back to its previous commit and verified, as many at once as the lanes"
						),
					},
					{ fieldname: "reason", fieldtype: "Small Text", label: __("Reason") },
				],
				primary_action_label: __("Abort"),
				primary_action(values) {
					dialog.hide();
					agent_update.call(frm, "abort", {
						rollback: values.rollback ? 1 : 0,
						reason: values.reason || "",
					});
				},
			});
			dialog.show();
		},

		eta(frm) {
			if (!["Running", "Paused"].includes(frm.doc.status)) return;
			frappe
				.call({ method: "agent_update.api.eta", args: { name: frm.doc.name } })
				.then((r) => {
					const out = r.message;
					if (!out || frm.doc.status === "Draft") return;
					const ends = out.ends_at
						? ` · ${__("ends about")} ${frappe.datetime.str_to_user(out.ends_at)}`
						: "";
					const wave = out.waves ? ` · ${__("wave {0} of {1}", [out.wave, out.waves])}` : "";
					frm.dashboard.add_comment(
						`${__("ETA")}: ${frappe.utils.escape_html(out.text)}${ends}${wave}`,
						"blue",
						true
					);
				});
		},

		split(frm) {
			const rows = (frm.doc.servers || []).length;
			const dialog = new frappe.ui.Dialog({
				title: __("Split Update"),
				fields: [
					{
						fieldname: "batches",
						fieldtype: "Int",
						label: __("Number of Batches"),
						default: 2,
						reqd: 1,
						description: __(
							"Between 2 and {0}. This update keeps the first batch; each other batch becomes a new Pending Agent Update linked to this one.",
							[rows]
						),
					},
				],
				primary_action_label: __("Split"),
				primary_action(values) {
					dialog.hide();
					agent_update.call(frm, "split", { batches: values.batches });
				},
			});
			dialog.show();
		},

		lock(frm) {
			const editable = EDITABLE.includes(frm.doc.status);
			frm.set_df_property("servers", "cannot_add_rows", frm.doc.status !== "Draft");
			frm.set_df_property("servers", "cannot_delete_rows", !editable);
			frm.set_df_property("server_types", "read_only", !editable);
			if (editable || frm.is_new()) {
				frm.enable_save();
			} else {
				frm.disable_save();
			}
		},

		progress(frm) {
			const rows = frm.doc.servers || [];
			if (frm.is_new() || !rows.length || frm.doc.status === "Draft") return;
			const done = rows.filter((r) => ENDED.includes(r.status)).length;
			const counts = {};
			rows.forEach((r) => (counts[r.status] = (counts[r.status] || 0) + 1));
			const summary = Object.keys(counts)
				.map((s) => `${__(s)}: ${counts[s]}`)
				.join(" · ");
			const percent = (100 * done) / rows.length;
			frm.dashboard.show_progress(__("Progress"), percent, `${done} / ${rows.length} · ${summary}`);
			if (frm.doc.progress !== percent) {
				frm.doc.progress = percent; // what the store computes; not an edit
				frm.refresh_field("progress");
			}
			if (frm.doc.pause_reason && frm.doc.status === "Paused") {
				frm.dashboard.set_headline_alert(
					`<div class="text-warning">${__("Paused")}: ${frappe.utils.escape_html(
						frm.doc.pause_reason
					)}</div>`
				);
			}
			if (frm.doc.halted && frm.doc.halt_reason) {
				frm.dashboard.set_headline_alert(
					`<div class="text-danger">${__("Halted")}: ${frappe.utils.escape_html(
						frm.doc.halt_reason
					)}</div>`
				);
			}
		},

		listen(frm) {
			if (frm.__agent_update_listening) return;
			frm.__agent_update_listening = true;
			frappe.realtime.on("agent_update_row", (data) => {
				if (!data || data.name !== frm.doc.name || frm.doctype !== "Agent Update") return;
				frm.__agent_update_heard = Date.now();
				const row = (frm.doc.servers || []).find((r) => r.idx === data.row.idx);
				if (!row) return;
				Object.assign(row, data.row);
				frm.refresh_field("servers");
				agent_update.progress(frm);
			});
			frappe.realtime.on("agent_update_status", (data) => {
				if (!data || data.name !== frm.doc.name || frm.doctype !== "Agent Update") return;
				frm.__agent_update_heard = Date.now();
				if (!frm.is_dirty()) frm.reload_doc();
			});
		},

		poll(frm) {
			clearTimeout(frm.__agent_update_timer);
			const socket = frappe.realtime.socket && frappe.realtime.socket.connected;
			// Pending: someone else may press Start; realtime tells us when connected.
			const watched = LIVE.includes(frm.doc.status) || (!socket && frm.doc.status === "Pending");
			if (frm.is_new() || !watched) return;
			const every = socket ? 15000 : LIVE.includes(frm.doc.status) ? 3000 : 10000;
			frm.__agent_update_timer = setTimeout(() => {
				const route = frappe.get_route();
				const here = route && route[1] === "Agent Update" && route[2] === frm.doc.name;
				const quiet = Date.now() - (frm.__agent_update_heard || 0) > every;
				if (here && quiet && !frm.is_dirty()) {
					frm.reload_doc();
				} else if (here) {
					agent_update.poll(frm);
				}
			}, every);
		},
	};
})();
