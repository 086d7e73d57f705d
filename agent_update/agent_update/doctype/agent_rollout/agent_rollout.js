// Agent Rollout form: the buttons of each status, a live progress bar, rows
// redrawn as the runner changes them. Realtime events redraw at once; a poll
// of agent_update.api.state keeps the form in step in every unfinished status
// whether or not the socket is connected (a missed event, no socket.io
// service), and reloads the form when the stored status moved, so the
// buttons shown always match it. While the form is editable it also reloads
// when the stored update changed under it (Split, Build Plan, another user),
// or says to reload when it has unsaved edits: the server refuses a stale
// save. Which statuses are final or ended comes from the engine, in the
// form's onload (agent_update.api.form_statuses). All work happens server
// side in agent_update.api; this file only asks for it.

(() => {
	const EDITABLE = ["Draft", "Pending"];
	const LIVE = ["Planning", "Running", "Paused"];
	// The engine's lists, from the form's onload; kept for the row formatter.
	const STATUSES = { final: [], ended_rows: [] };
	const ENDED = STATUSES.ended_rows;
	const ROW_FIELDS = [
		"status",
		"agent_status",
		"reason",
		"reported_commit",
		"start",
		"end",
		"duration",
	];
	const POLL_FAST = 2000; // a live status, or just after a button: the change is near
	const POLL_SLOW = 10000; // Draft/Pending: someone else may press a button
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

	const esc = (text) => frappe.utils.escape_html(text);
	const short_commit = (value) =>
		value
			? `<span class="text-monospace" title="${esc(value)}">${esc(value.slice(0, 10))}</span>`
			: "";
	const FORMATTERS = {
		status(value, df, options, doc) {
			if (!value) return "";
			const took =
				doc && ENDED.includes(value) && doc.duration
					? ` <span class="text-muted">${agent_update.took(doc.duration)}</span>`
					: "";
			return `<span class="indicator-pill ${ROW_COLORS[value] || "gray"}">${esc(
				__(value)
			)}</span>${took}`;
		},
		reason(value) {
			return value ? `<span title="${esc(value)}">${esc(value)}</span>` : "";
		},
		current_commit: short_commit,
		reported_commit: short_commit,
		server(value, df, options, doc) {
			// A Data field (the registry is the row's server_doctype: Agent Server or one of
			// Press's server doctypes), so Frappe's set_indicator_formatter, made for Link
			// fields, cannot draw it: the dot of the row's status, a link to the record.
			if (!value) return "";
			const row = doc || {};
			const color = ROW_COLORS[row.status] || "gray";
			const registry = row.server_doctype;
			const name = registry
				? `<a href="/app/${esc(frappe.router.slug(registry))}/${encodeURIComponent(
						value
				  )}" title="${esc(__(registry))}">${esc(value)}</a>`
				: esc(value);
			return `<span class="indicator ${color}">${name}</span>`;
		},
	};

	frappe.ui.form.on("Agent Rollout", {
		onload(frm) {
			agent_update.listen(frm);
		},

		refresh(frm) {
			agent_update.statuses(frm);
			agent_update.formatters(frm);
			agent_update.lock(frm);
			agent_update.indicator(frm);
			agent_update.buttons(frm);
			agent_update.reasons(frm);
			agent_update.progress(frm);
			agent_update.eta(frm);
			agent_update.warn(frm, (frm.doc.__onload || {}).queue_warning);
			agent_update.poll(frm);
		},
	});

	const agent_update = {
		statuses(frm) {
			const sent = (frm.doc.__onload || {}).statuses;
			if (!sent) return;
			STATUSES.final.splice(0, STATUSES.final.length, ...(sent.final || []));
			ENDED.splice(0, ENDED.length, ...(sent.ended_rows || []));
		},

		final(frm) {
			return STATUSES.final.includes(frm.doc.status);
		},

		call(frm, method, args, done) {
			// An action always acts on what the form shows: unsaved edits are saved first
			// (and a save the server refuses stops the action).
			const before = frm.doc.status;
			const act = () =>
				frappe.call({
					method: `agent_update.api.${method}`,
					args: Object.assign({ name: frm.doc.name }, args || {}),
					freeze: true,
				});
			const saved = frm.is_dirty() ? frm.save() : Promise.resolve();
			return saved
				.then(act)
				.then((r) => {
					const out = r.message || {};
					const moved = out.status && out.status !== before;
					frappe.show_alert({
						message: moved
							? __("Now {0}", [__(out.status)])
							: out.queued
							? __("Started in the background; the form follows it")
							: __("Nothing to do: already under way or done"),
						indicator: moved ? "green" : out.queued ? "blue" : "orange",
					});
					if (done) done(out);
					frm.__agent_update_expect = Date.now(); // poll fast until the status moves
					if ((out.status && out.status !== frm.doc.status) || out.updates) {
						frm.reload_doc();
					} else {
						agent_update.poll(frm, 500);
					}
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
					agent_update.start_question(frm),
					"start"
				);
				frm.add_custom_button(__("Split Update"), () => agent_update.split(frm));
			}
			if (status === "Running" && !frm.doc.aborted) {
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
			const me = frappe.session.user;
			if (
				["Draft", "Pending"].includes(status) &&
				frm.doc.approval_required &&
				!frm.doc.approved_by &&
				frm.doc.start_requested_by !== me
			) {
				agent_update.confirmed(
					frm,
					"Approve",
					__("Approve this update? It starts when Start is pressed by someone else, or at once if that was asked."),
					"approve"
				);
			}
			if (["Pending", "Running", "Paused"].includes(status) && !frm.doc.aborted) {
				frm.add_custom_button(__("Abort"), () => agent_update.abort(frm));
			}
			if (agent_update.final(frm)) {
				frm.add_custom_button(__("Undo"), () =>
					frappe.confirm(
						__(
							"Make new updates that take every server this update changed back to the commit it ran before? They are planned, then wait for Start."
						),
						() =>
							frappe
								.xcall("agent_update.api.undo", { name: frm.doc.name })
								.then((out) => {
									const links = (out.updates || [])
										.map((n) => `<a href="/app/agent-rollout/${n}">${n}</a>`)
										.join(", ");
									const left = (out.left_out || []).length
										? `<br>${__("Left out")}: ${frappe.utils.escape_html(
												out.left_out.join("; ")
										  )}`
										: "";
									frappe.msgprint(__("Undo: {0}", [links]) + left, __("Undo"));
								})
					)
				);
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
			// Shown once, in the progress line; fetched again whenever a server ends.
			if (!["Running", "Paused"].includes(frm.doc.status)) {
				frm.__agent_update_eta = "";
				return;
			}
			frappe
				.call({ method: "agent_update.api.eta", args: { name: frm.doc.name } })
				.then((r) => {
					const out = r.message;
					if (!out || !["Running", "Paused"].includes(frm.doc.status)) return;
					const ends = out.ends_at
						? ` · ${__("ends about")} ${frappe.datetime.str_to_user(out.ends_at)}`
						: "";
					const wave = out.wave_text ? ` · ${out.wave_text}` : "";
					frm.__agent_update_eta = `${__("ETA")}: ${out.text}${ends}${wave}`;
					agent_update.progress(frm);
				});
		},

		start_question(frm) {
			const count = (frm.doc.servers || []).filter((r) => r.status === "Pending").length;
			const commit = (frm.doc.commit_hash || "").slice(0, 12);
			return count === 1
				? __("Start updating 1 server to {0}?", [commit])
				: __("Start updating {0} servers to {1}?", [count, commit]);
		},

		indicator(frm) {
			// Abort stored, servers still in flight: say Aborting, not Running.
			if (frm.doc.aborted && !agent_update.final(frm)) {
				frm.page.set_indicator(__("Aborting"), "orange");
			}
		},

		reasons(frm) {
			// Why it paused, halted, waits or aborts: at the top of the form, whole.
			const doc = frm.doc;
			const lines = [];
			if (doc.status === "Paused" && doc.pause_reason) {
				lines.push([__("Paused"), doc.pause_reason, "orange"]);
			}
			if (doc.halted && doc.halt_reason) lines.push([__("Halted"), doc.halt_reason, "red"]);
			if (doc.aborted && doc.abort_reason) {
				lines.push([__("Aborted"), doc.abort_reason, "red"]);
			}
			if (doc.status === "Running" && doc.waiting_reason) {
				lines.push([__("Waiting"), doc.waiting_reason, "blue"]);
			}
			if (doc.approval_required && !doc.approved_by && !agent_update.final(frm)) {
				const who = doc.start_requested_by
					? __("{0} asked to start it; another Agent Update Manager must approve", [
							doc.start_requested_by,
					  ])
					: __("Start needs approval by a second Agent Update Manager");
				lines.push([__("Approval"), who, "orange"]);
			}
			if (doc.status === "Pending" && doc.scheduled_start) {
				lines.push([
					__("Scheduled"),
					__("starts by itself at {0}", [frappe.datetime.str_to_user(doc.scheduled_start)]),
					"blue",
				]);
			}
			frm.set_intro("");
			lines.forEach(([head, text, color]) =>
				frm.set_intro(`<b>${esc(head)}</b>: ${esc(text)}`, color)
			);
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
							"Between 2 and {0}. This update keeps the first batch; each other batch becomes a new Pending Agent Rollout linked to this one.",
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
			frm.set_df_property("servers", "read_only", !editable && !frm.is_new());
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
			const percent = Math.round((1000 * done) / rows.length) / 10;
			// An ETA only while time is left: a finished rollout keeps none from its run.
			const live = ["Running", "Paused"].includes(frm.doc.status);
			if (!live) frm.__agent_update_eta = "";
			const eta = live && frm.__agent_update_eta ? ` · ${esc(frm.__agent_update_eta)}` : "";
			frm.dashboard.show_progress(
				__("Progress"),
				percent,
				`${done} / ${rows.length} (${percent}%) · ${summary}${eta}`
			);
			if (frm.__agent_update_done !== undefined && frm.__agent_update_done !== done) {
				frm.__agent_update_done = done;
				agent_update.eta(frm); // a server ended: the mean per server moved
			}
			frm.__agent_update_done = done;
			if (frm.doc.progress !== percent) {
				frm.doc.progress = percent; // what the store computes; not an edit
				frm.refresh_field("progress");
			}
		},

		formatters(frm) {
			// Status as a coloured pill (and how long an ended server took), reason whole in a
			// tooltip, commits short with the full hash, the server linked to its registry's
			// record with its status's dot. Set on the doctype's fields (copied
			// for documents loaded later) and on this grid's rows, which format with their own
			// copies and pass the row.
			const map = frappe.meta.docfield_map["Agent Rollout Server"] || {};
			const grid = frm.fields_dict.servers && frm.fields_dict.servers.grid;
			let changed = false;
			Object.keys(FORMATTERS).forEach((fieldname) => {
				const formatter = FORMATTERS[fieldname];
				if (map[fieldname]) map[fieldname].formatter = formatter;
				if (!grid) return;
				const copies = [
					...(grid.docfields || []),
					...(grid.grid_rows || []).flatMap((row) => row.docfields || []),
				].filter((df) => df && df.fieldname === fieldname);
				if (copies.some((df) => df.formatter !== formatter)) {
					grid.update_docfield_property(fieldname, "formatter", formatter);
					changed = true;
				}
			});
			if (changed) frm.refresh_field("servers");
		},

		took(seconds) {
			const s = Math.round(seconds);
			return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${s % 60}s`;
		},

		warn(frm, text) {
			// Lanes the workers cannot carry, or the app's queue not configured.
			frm.__agent_update_warning = text || "";
			frm.dashboard.clear_comment();
			if (text) frm.dashboard.add_comment(frappe.utils.escape_html(text), "yellow", true);
		},

		apply_rows(frm, rows) {
			let changed = false;
			(rows || []).forEach((fresh) => {
				const row = (frm.doc.servers || []).find((r) => r.idx === fresh.idx);
				if (!row) return;
				ROW_FIELDS.forEach((field) => {
					if ((row[field] || "") !== (fresh[field] || "")) {
						row[field] = fresh[field];
						changed = true;
					}
				});
			});
			if (changed) {
				frm.refresh_field("servers");
				agent_update.progress(frm);
			}
		},

		listen(frm) {
			if (frm.__agent_update_listening) return;
			frm.__agent_update_listening = true;
			frappe.realtime.on("agent_update_row", (data) => {
				if (!data || data.name !== frm.doc.name || frm.doctype !== "Agent Rollout") return;
				frm.__agent_update_heard = Date.now();
				const row = (frm.doc.servers || []).find((r) => r.idx === data.row.idx);
				if (!row) return;
				Object.assign(row, data.row);
				frm.refresh_field("servers");
				agent_update.progress(frm);
			});
			frappe.realtime.on("agent_update_status", (data) => {
				if (!data || data.name !== frm.doc.name || frm.doctype !== "Agent Rollout") return;
				frm.__agent_update_heard = Date.now();
				if (!frm.is_dirty()) frm.reload_doc();
			});
		},

		poll(frm, delay) {
			// Every unfinished status: reload when the stored status moved, else redraw rows.
			clearTimeout(frm.__agent_update_timer);
			const expecting = Date.now() - (frm.__agent_update_expect || 0) < 60000;
			// A final status stops the poll, unless an action was just taken from it
			// (Force Continue): then it follows until the stored status moves.
			if (frm.is_new() || (agent_update.final(frm) && !expecting)) return;
			const every =
				delay || (LIVE.includes(frm.doc.status) || expecting ? POLL_FAST : POLL_SLOW);
			const name = frm.doc.name;
			frm.__agent_update_timer = setTimeout(() => {
				const route = frappe.get_route();
				if (!route || route[1] !== "Agent Rollout" || route[2] !== name) return; // left
				frappe
					.xcall("agent_update.api.state", { name })
					.then((state) => agent_update.sync(frm, state))
					.catch(() => null)
					.finally(() => {
						if (frm.doc.name === name && !frm.__agent_update_reloading) {
							agent_update.poll(frm);
						}
					});
			}, every);
		},

		sync(frm, state) {
			if (!state || state.name !== frm.doc.name) return;
			const moved =
				state.status !== frm.doc.status ||
				cint(state.halted) !== cint(frm.doc.halted) ||
				(state.halt_reason || "") !== (frm.doc.halt_reason || "") ||
				(state.stuck_at_planning_reason || "") !== (frm.doc.stuck_at_planning_reason || "");
			// Editable: any stored change (Split, Build Plan, another user) makes this copy stale.
			const changed =
				EDITABLE.includes(frm.doc.status) &&
				state.modified &&
				state.modified !== frm.doc.modified;
			if (moved || changed || state.final) {
				frm.__agent_update_expect = 0;
				if (frm.is_dirty()) {
					const message = moved
						? __("This update is now {0}: reload to see it", [__(state.status)])
						: __("This update was changed since you opened it: reload it before saving");
					if (frm.__agent_update_stale !== message) {
						frm.__agent_update_stale = message;
						frappe.show_alert({ message, indicator: "orange" }, 15);
					}
					return;
				}
				frm.__agent_update_stale = "";
				frm.__agent_update_reloading = true;
				frm.reload_doc().finally(() => (frm.__agent_update_reloading = false));
				return;
			}
			agent_update.apply_rows(frm, state.rows);
			if ((state.queue_warning || "") !== (frm.__agent_update_warning || "")) {
				agent_update.warn(frm, state.queue_warning);
			}
		},
	};
})();
