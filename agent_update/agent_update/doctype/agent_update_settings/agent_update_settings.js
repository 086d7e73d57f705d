// Agent Update Settings: the SSH private key is pasted in a multi-line dialog,
// checked and encrypted server side (agent_update.api.set_ssh_private_key);
// the form only ever shows its fingerprint.

frappe.ui.form.on("Agent Update Settings", {
	refresh(frm) {
		const has_key = !!frm.doc.ssh_key_fingerprint;
		frm.set_df_property(
			"ssh_key_fingerprint",
			"placeholder",
			has_key ? "" : __("Not set")
		);
		frm.add_custom_button(
			has_key ? __("Replace SSH Private Key") : __("Set SSH Private Key"),
			() => agent_update_settings.ask_key(frm),
			__("SSH Key")
		);
		if (has_key) {
			frm.add_custom_button(
				__("Remove SSH Private Key"),
				() =>
					frappe.confirm(__("Remove the SSH private key? No server can be reached without one."), () =>
						agent_update_settings.store_key(frm, "")
					),
				__("SSH Key")
			);
		}
	},
});

const agent_update_settings = {
	ask_key(frm) {
		const dialog = new frappe.ui.Dialog({
			title: __("SSH Private Key"),
			fields: [
				{
					fieldname: "key",
					fieldtype: "Small Text",
					label: __("Private Key"),
					reqd: 1,
					description: __(
						"Paste the whole key, BEGIN and END lines included (OpenSSH or PEM: ed25519, RSA, ECDSA; no passphrase). It is checked, stored encrypted and never shown again: only its fingerprint is."
					),
				},
			],
			primary_action_label: __("Save Key"),
			primary_action(values) {
				agent_update_settings.store_key(frm, values.key, dialog);
			},
		});
		dialog.show();
	},

	store_key(frm, key, dialog) {
		frappe
			.call({
				method: "agent_update.api.set_ssh_private_key",
				args: { key },
				freeze: true,
			})
			.then((r) => {
				if (dialog) dialog.hide();
				const fingerprint = (r.message || {}).fingerprint;
				frappe.show_alert({
					message: fingerprint
						? __("SSH private key stored: {0}", [fingerprint])
						: __("SSH private key removed"),
					indicator: "green",
				});
				frm.reload_doc();
			});
	},
};
