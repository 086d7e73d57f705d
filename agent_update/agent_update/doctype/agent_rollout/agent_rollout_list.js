// Agent Rollout list: a coloured indicator per status, halted updates marked.

(() => {
	const AGENT_UPDATE_COLORS = {
		Draft: "gray",
		Planning: "light-blue",
		Pending: "blue",
		Running: "orange",
		Paused: "yellow",
		Success: "green",
		"Partial Success": "purple",
		Failure: "red",
		Aborted: "darkgrey",
	};

	frappe.listview_settings["Agent Rollout"] = {
		add_fields: ["status", "progress", "halted", "aborted", "split_from"],
		has_indicator_for_draft: true,

		get_indicator(doc) {
			const running = doc.status === "Running";
			const label =
				doc.aborted && running
					? __("Aborting")
					: doc.halted && running
						? __("Halting")
						: __(doc.status);
			return [label, AGENT_UPDATE_COLORS[doc.status] || "gray", `status,=,${doc.status}`];
		},

		formatters: {
			progress(value) {
				const pct = Math.round(value || 0);
				return `<div class="progress" style="height: 8px; margin-top: 6px" title="${pct}%">
					<div class="progress-bar" style="width: ${pct}%"></div></div>`;
			},
		},
	};
})();
